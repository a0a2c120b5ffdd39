"""A model factory of your own, for ``teacher.arch`` / ``student.arch``.

    teacher:
      arch: examples.my_model:build      # <module importable from the project root>:<callable>
      kwargs: {width: 32}                # optional: passed to build() as keywords

The factory receives, among ``num_classes``, ``in_channels`` and ``image_size``, those its
signature names (all of them if it takes ``**kwargs``), plus ``kwargs`` from params.yaml, and
returns an ``nn.Module`` mapping a ``[batch, in_channels, image_size, image_size]`` batch to
``[batch, num_classes]`` logits. Checkpoints store the arch string and arguments, not your code:
the module must stay importable for the later stages to rebuild the model.

Everything after that is the lab's: training, distillation, channel pruning (torch-pruning
traces the model; the last conv/linear to run is kept whole as the classifier), and int8 through
PT2E (``quantize.engine: auto``), which needs a model ``torch.export`` can capture (no
data-dependent Python control flow in ``forward``).
"""

from torch import nn


def build(num_classes: int, in_channels: int, width: int = 16) -> nn.Module:
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(
        block(in_channels, width),
        nn.MaxPool2d(2, ceil_mode=True),
        block(width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )
