"""The family contract.

A family is one module with a fixed surface; the trainer, CLI, evaluator and demo speak only to it.

Required::

    NAME: str                                     # registry name, e.g. "vae"
    Config: type                                  # dataclass of every hyperparameter (the ``model.*`` keys);
        # its ``RANGES: ClassVar[dict[str, str]]`` gives numeric fields an interval such as "[1,inf)" or
        # "[0,1)", checked with a one-line error whenever a config is read (imagegen.config.check_range)
    TRAIN_DEFAULTS: dict                          # optional: train.* defaults for this family (lr, betas, ...)
    def build(cfg, data_info) -> nn.Module        # data_info: imagegen.data.DataInfo
    def train_step(model, batch, opts, step, accel, grad_clip=0.0) -> dict[str, Tensor | float]
        # ``model`` is what accelerate prepared (maybe DDP-wrapped: call ``model(...)`` for anything
        # that needs gradients, ``accel.unwrap_model(model)`` for attributes); ``batch`` is a
        # ``imagegen.data.Batch`` (x: (B, C, H, W) float in [-1, 1], y: (B,) long or None);
        # ``opts`` is the dict from ``configure_optimizers``; ``grad_clip`` the max global gradient norm
        # (the trainer passes ``train.grad_clip``; 0 disables). The step calls ``accel.backward(loss)``
        # and steps/zeroes its own optimisers (a GAN owns two) with ``families.base.optimizer_step(accel,
        # opt, params, grad_clip)``, which clips. Return scalars to log; the key "loss" is checked for
        # NaN/Inf by the trainer.
    def sample(model, n, labels=None, generator=None, **options) -> Tensor
        # (n, C, H, W) in [-1, 1]; ``model`` is the unwrapped (EMA) module in eval mode; options are
        # family specific (sampler, steps, guidance, temperature, truncation) and exposed by the CLI
        # through ``inspect.signature`` (imagegen.cli.family_options: one flag per keyword option).
        # ``generator`` is a torch.Generator, None, or (from LoadedModel.sample) an
        # ``imagegen.rng.ImageGenerators``, one generator per image: draw every random number of a sample
        # through ``imagegen.rng.randn / rand / randint`` with the image as the first dimension, so that image
        # i depends on its own seed only and the same seed gives the same image at any batch size (the
        # contract test checks batch sizes 1, 3 and 4).

Optional::

    SAMPLE_CHOICES: dict[str, tuple]               # the values a ``sample`` option takes, where it is a
        # choice, e.g. {"sampler": ("naive", "cached")}: ``imagegen compare`` passes a shared option such as
        # --sampler dpmpp-2m only to the families whose choices include the value; the CLI's --help lists them
        # and LoadedModel.sample refuses another value in one line (model.check_choices)
    def configure_optimizers(model, model_cfg, train_cfg) -> dict[str, Optimizer]
        # default: {"main": AdamW(lr, betas, weight_decay)} (families.base.default_optimizers)
    def after_training(model, dataset) -> dict
        # what a family fits in closed form once gradient training ends (the VAE: its sampling prior, fitted
        # to the posterior means); the trainer calls it on the raw weights and on the EMA copy (eval mode) with
        # the training ImageDataset (images, or a latent run's codes) and saves the last step again with it.
        # Returns what it fitted (for the log), {} when it fitted nothing. Not called on an interrupted run.
    OPTIONAL_STATE: tuple[str, ...]                # on the nn.Module: state_dict keys added after checkpoints
        # were first written, so older checkpoints still load without them (imagegen.checkpoint)
    def nll(model, x, labels=None, **options) -> Tensor         # (B,) nats per image; bits/dim derived
    def complete(model, x, mask, labels=None, generator=None, **options) -> Tensor
        # fill where mask == 0; pixels where mask == 1 are returned unchanged
    def denoise(model, x, strength, labels=None, generator=None, **options) -> Tensor
    def interpolate(model, a, b, frames, labels=None, generator=None, **options) -> Tensor
        # (frames, C, H, W) from a to b; a, b are images (1, C, H, W) in [-1, 1]
    def reconstruct(model, x, labels=None) -> Tensor
    RESTORE_TASKS: tuple[str, ...]                 # which of imagegen.restoration.TASKS (inpaint, sr, colourise,
        # denoise) ``restore`` solves; ``imagegen list`` shows them and a task outside them is a one-line error
        # naming the families that offer it (registry.restore_tasks, restoration.check_offered)
    def restore(model, y, operator, labels=None, generator=None, **options) -> Tensor
        # recover (N, C, H, W) images from a measurement y = A(x) + sigma_y n; ``operator`` is an
        # imagegen.restoration.Operator (forward A, pseudo-inverse A+, noise sigma_y), y has its measurement
        # shape. For a noiseless operator A(result) == y to float precision (``operator.finalize``).
        # The operators are shared; each family solves it as its kind of model can (diffusion: DDNM; GAN:
        # latent search; VAE: pseudo-Gibbs or latent MAP; PixelCNN: masks only)
    GENERATIVE: bool                               # default True; False for a family that draws no samples
        # (the autoencoder, the first stage of latent models): its ``sample`` is a one-line error, the
        # contract test checks reconstructions instead, and ``imagegen list`` shows it as a first stage
    def preview(model, x) -> Tensor                # the trainer's periodic grid from real images ``x`` instead
        # of ``sample`` (the autoencoder: each image beside its reconstruction)

Latent models (``data.latent``, imagegen.latent) need nothing from a family: it is built on a DataInfo of the
first stage's codes and trained, sampled and completed on them; ``LoadedModel`` encodes and decodes.

What reaches these functions through ``imagegen.api.LoadedModel`` (the CLI and the Python API) is already
checked there: ``x``/``a``/``b`` are float (N, C, H, W) of the model's shape in [-1, 1] on the model's
device, a mask is float (N, 1, H, W) of 0s and 1s, ``nll``'s labels a (N,) long tensor in range; ``restore``'s y
has the operator's measurement shape, and the operator is one the family's RESTORE_TASKS cover.
"""
