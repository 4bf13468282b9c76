"""What a train-step benchmark measures (atamp_tf.tools.bench): a TensorFlow-free module, so
that the command's flag defaults and --help come before TensorFlow."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """What one benchmark run measures. `delta` and `amp_steps` describe the AMP variant."""
    arch: str = "preact_resnet18"
    width: int = 16
    depth: int = None
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    batch_size: int = 128
    attack_steps: int = 10
    method: str = "at"
    norm: str = "linf"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    delta: float = 0.1
    amp_steps: int = 1
    amp_scope: str = "tensor"
    attack_bn: str = "train"
    steps: int = 5
    warmup: int = 2
    jit_compile: bool = False
    mixed_precision: bool = False
    peak_matmul_size: int = 4096
    seed: int = 0

    def validate(self):
        positive = dict(width=self.width, image_size=self.image_size, channels=self.channels,
                        num_classes=self.num_classes, batch_size=self.batch_size,
                        steps=self.steps, amp_steps=self.amp_steps,
                        peak_matmul_size=self.peak_matmul_size)
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {self.warmup!r}")
        if not self.delta > 0:
            raise ValueError(f"delta must be > 0 (it is the AMP variant's radius; the PGD-AT "
                             f"variant always uses 0), got {self.delta!r}")
        from atamp_tf.losses import get_method  # pylint: disable=import-outside-toplevel

        get_method(self.method)
