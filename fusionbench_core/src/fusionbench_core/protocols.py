"""The three protocols of FusionBench: model pools, task pools and fusion algorithms.

Data flows one way: a :class:`ModelPool` goes into a :class:`FusionAlgorithm`, whose fused model goes
into a :class:`TaskPool`, whose :class:`EvaluationReport` goes into the run report. An algorithm sees
only the model pool it is given; whatever data it needs it asks of that pool, after declaring it
through :attr:`FusionAlgorithm.requirement` and :attr:`FusionAlgorithm.data`.

Nothing here imports torch: tensors and modules appear only as type names.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .errors import ConfigError, UnknownComponentError

if TYPE_CHECKING:
    import torch

PRETRAINED = "_pretrained_"
"""The model name under which a pool exposes its pretrained (base) model."""


class Requirement(str, enum.Enum):
    """What a fusion algorithm needs beyond the weights, from cheapest to dearest."""

    DATA_FREE = "data-free"
    """Weights only."""
    TRAIN_STATISTICS = "train-statistics"
    """Statistics (Gram matrices, Fisher) from a few training inputs per task."""
    TEST_TIME = "test-time"
    """Test-time adaptation on unlabelled test inputs (e.g. entropy minimisation)."""
    TRAINING = "training"
    """Gradient training on labelled training data."""


class Capability(str, enum.Enum):
    """What a fusion method may need of the pools it runs on, beyond weights (see :attr:`BaseAlgorithm.needs`).

    A method declares its needs on its class; a model pool or task pool declares what it offers when it is
    registered (``register(name, target, provides=["data", ...])``). ``fb methods show NAME`` matches the
    two without importing anything, and the run program refuses, in one line naming the method and the
    pool, a pool that lacks a need before the method reads a model
    (:func:`fusionbench_core.needs.check_needs`).
    """

    DATA = "data"
    """The model pool hands out data and scores backbones (:class:`DataModelPool`); implied by a
    :class:`Requirement` other than data-free."""
    PRETRAINED = "pretrained"
    """The model pool holds a pretrained (base) model; implied by ``needs_pretrained = True``."""
    ARCHITECTURE = "architecture"
    """The model pool describes its backbones' layers, MLPs and linear layers (:class:`DescribesArchitecture`)."""
    LAYER_STACK = "layer-stack"
    """Its :class:`ArchitectureSpec` names one stack of blocks (``layers``); an encoder-decoder has two."""
    LINEAR_MODULES = "linear-modules"
    """Its backbones' linear layers are modules of the types ``ArchitectureSpec.linear_types`` names, which a
    method may replace (GPT-2's input-major ``Conv1D`` layers are not)."""
    PERMUTATION_SPEC = "permutation-spec"
    """The model pool (or its models) offers ``permutation_spec()``: which tensor axes each hidden unit spans."""
    CLASS_LOGITS = "class-logits"
    """The task pool scores class logits, so a fused :class:`Predictor` (an ensemble) can be scored;
    a task pool that scores generated text does not."""
    TWO_MODELS = "two-models"
    """Exactly two fine-tuned models in the pool (a suite offers it once two of its tasks are selected)."""


CAPABILITY_TEXT: dict[Capability, str] = {
    Capability.DATA: "data from the model pool (a DataModelPool: batches() and logits())",
    Capability.PRETRAINED: "a pretrained model",
    Capability.ARCHITECTURE: "the model's architecture (ModelPool.architecture())",
    Capability.LAYER_STACK: "one stack of layers (ArchitectureSpec.layers)",
    Capability.LINEAR_MODULES: "linear layers that are modules of ArchitectureSpec.linear_types (nn.Linear)",
    Capability.PERMUTATION_SPEC: "a permutation spec of the models' hidden units (permutation_spec())",
    Capability.CLASS_LOGITS: "a task pool that scores class logits (not generated text)",
    Capability.TWO_MODELS: "exactly 2 fine-tuned models",
}
"""How listings and errors describe each capability."""


def method_needs(method: Any) -> tuple[Capability, ...]:
    """Everything ``method`` (a class or an instance) needs of its pools, in :class:`Capability` order.

    Its declared :attr:`~BaseAlgorithm.needs`, plus :attr:`Capability.DATA` when its ``requirement`` is not
    data-free and :attr:`Capability.PRETRAINED` when it sets ``needs_pretrained = True`` (the tensor-wise
    methods' flag). A name that is not a :class:`Capability` is a one-line error naming the method.
    """
    name = getattr(method, "name", "") or getattr(method, "__name__", type(method).__name__)
    wanted: set[Capability] = set()
    for item in getattr(method, "needs", ()) or ():
        try:
            wanted.add(Capability(item))
        except ValueError:
            known = ", ".join(c.value for c in Capability)
            raise ConfigError(f"method '{name}' declares an unknown need '{item}' (known: {known})") from None
    requirement = getattr(method, "requirement", Requirement.DATA_FREE)
    if Requirement(getattr(requirement, "value", requirement)) is not Requirement.DATA_FREE:
        wanted.add(Capability.DATA)
    if getattr(method, "needs_pretrained", False) is True:
        wanted.add(Capability.PRETRAINED)
    return tuple(c for c in Capability if c in wanted)


@dataclass(frozen=True)
class DataRequest:
    """The data an algorithm asks its model pool for, per task.

    ``split`` is ``"train"``, ``"validation"`` or ``"test"``; ``labelled=False`` means the pool
    must not hand out labels (test-time adaptation); ``examples`` caps the number per task.
    """

    split: str = "train"
    examples: int | None = 256
    labelled: bool = True


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Hyperparameter:
    """One documented, typed hyperparameter of an algorithm; pools declare theirs as :class:`Option`."""

    role: ClassVar[str] = "hyperparameter"
    """How errors call this setting."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    #: Inclusive lower bound, or ``None``; ``minimum_exclusive`` makes it strict.
    minimum: float | None = None
    #: Inclusive upper bound, or ``None``; ``maximum_exclusive`` makes it strict.
    maximum: float | None = None
    minimum_exclusive: bool = False
    maximum_exclusive: bool = False

    def range_text(self) -> str | None:
        """The valid range in interval notation (``[0, 1)``, ``> 0``), or ``None`` when unbounded."""
        if self.minimum is None and self.maximum is None:
            return None
        if self.maximum is None:
            return f"{'>' if self.minimum_exclusive else '>='} {_number(self.minimum)}"
        if self.minimum is None:
            return f"{'<' if self.maximum_exclusive else '<='} {_number(self.maximum)}"
        left = "(" if self.minimum_exclusive else "["
        right = ")" if self.maximum_exclusive else "]"
        return f"{left}{_number(self.minimum)}, {_number(self.maximum)}{right}"

    def in_range(self, value: Any) -> bool:
        """Whether ``value`` (already parsed) lies in the declared range; ``None`` always does."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        if self.minimum is not None:
            if value < self.minimum or (self.minimum_exclusive and value == self.minimum):
                return False
        if self.maximum is not None:
            if value > self.maximum or (self.maximum_exclusive and value == self.maximum):
                return False
        return True

    def parse(self, value: Any, owner: str = "", *, subject: str | None = None) -> Any:
        """Convert ``value`` (often a string from ``-s key=value``) to this type, checking choices and range.

        Errors name the setting as ``hyperparameter 'OWNER.NAME'`` (``option`` for an :class:`Option`);
        ``subject`` replaces that wording, e.g. ``option 'modelpool.seed' of model pool 'tiny'``.
        """
        if subject is None:
            subject = f"{self.role} '{owner}.{self.name}'" if owner else f"{self.role} '{self.name}'"
        try:
            parsed = _convert(value, self.type)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{subject} expects {self.type.__name__}, got {value!r}") from exc
        if self.choices is not None and parsed not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise ConfigError(f"{subject} must be one of {allowed}, got {value!r}")
        if not self.in_range(parsed):
            raise ConfigError(f"{subject} must be in {self.range_text()}, got {value!r}")
        return parsed

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: name, type, default, help, and choices and range when declared."""
        out = {"name": self.name, "type": self.type.__name__, "default": self.default, "help": self.help}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.range_text() is not None:
            out["range"] = self.range_text()
        return out


@dataclass(frozen=True)
class Option(Hyperparameter):
    """One documented, typed option of a model pool or task pool, set with ``-s modelpool.KEY=VALUE``.

    The same fields as :class:`Hyperparameter` (type, default, choices, range); only the wording of
    errors differs. The run program names the role and the pool in its errors, e.g.
    ``option 'modelpool.n_models' of model pool 'tiny' expects int, got 'abc'``.
    """

    role: ClassVar[str] = "option"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _convert(value: Any, kind: type) -> Any:
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(value)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError(value)
        number = float(value)
        if math.isnan(number):
            raise ValueError(value)
        return number
    if kind is int:
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if kind is list:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                loaded = json.loads(text)
            else:
                loaded = [part.strip() for part in text.split(",") if part.strip()]
            return [_number_or_text(item) for item in loaded]
        return list(value)
    if kind is str:
        return str(value)
    return kind(value)


def _number_or_text(item: Any) -> Any:
    if not isinstance(item, str):
        return item
    for kind in (int, float):
        try:
            return kind(item)
        except ValueError:
            pass
    return item


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of one tensor, known without reading its data."""

    shape: tuple[int, ...]
    dtype: str
    """The torch dtype's name without the ``torch.`` prefix, e.g. ``"float32"``."""

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


@runtime_checkable
class TensorSource(Protocol):
    """One model's weights, readable tensor by tensor without materialising the whole model."""

    def keys(self) -> list[str]:
        """Tensor names in a stable order."""

    def info(self, key: str) -> TensorInfo:
        """Shape and dtype of ``key`` without reading it."""

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor (a fresh CPU tensor the caller may modify)."""


@runtime_checkable
class ModelPool(Protocol):
    """A pretrained model and the models fine-tuned from it, one per task."""

    name: str

    @property
    def model_names(self) -> list[str]:
        """Names of the fine-tuned models (usually their task names), pretrained excluded."""

    @property
    def has_pretrained(self) -> bool:
        """Whether :data:`PRETRAINED` names a base model in this pool."""

    def load_model(self, name: str) -> Any:
        """Load one model as a module (``name`` may be :data:`PRETRAINED`)."""

    def tensors(self, name: str) -> TensorSource:
        """Lazy tensor-by-tensor access to one model's weights."""

    def build_model(self, state: Mapping[str, torch.Tensor]) -> Any:
        """A module of this pool's architecture carrying ``state`` (the fused weights)."""

    # Optional: ``save_model(model, path)`` (for ``fb run --save-model``) and ``model_dir(name) -> Path | None``,
    # the directory holding a model's files on disk (``fb merge -p`` copies config and tokenizer files from
    # the pretrained one). Pools without them still run everything else.


@dataclass(frozen=True)
class ArchitectureSpec:
    """What a pool's backbone is made of, for methods that restructure it (model mixing, up-scaling).

    Module names are those of the backbone's ``named_modules()`` (``""`` is the backbone itself);
    ``mlps`` holds :func:`fnmatch.fnmatch` patterns over them, ``*`` matching any characters.
    Methods learn the architecture only from here, so they never name a model family.
    """

    layers: str | None = None
    """Name of the layer stack, an ``nn.ModuleList`` or ``nn.Sequential`` of blocks run in order; ``None``: none."""
    mlps: tuple[str, ...] = ()
    """Patterns of the MLP (feed-forward) modules, each taking the hidden states as its first argument.
    Where one MLP is several modules (e.g. an input and an output projection), list each."""
    linear_types: tuple[str, ...] = ("Linear",)
    """Class names of the linear layers: modules with ``weight`` ``(out, in)`` and optional ``bias`` computing
    ``x Wᵀ + b``; a subclass of a named class counts."""


@runtime_checkable
class DescribesArchitecture(Protocol):
    """Optional model-pool capability: say which modules of its backbones are the layers, MLPs and linears."""

    def architecture(self) -> ArchitectureSpec:
        """The architecture of this pool's backbones (the same for every model of the pool)."""


def architecture_of(modelpool: Any, method: str) -> ArchitectureSpec:
    """``modelpool.architecture()``, or a one-line error naming the method and the pool that declares none."""
    if not isinstance(modelpool, DescribesArchitecture):
        raise ConfigError(
            f"method '{method}' needs the model's architecture, but model pool "
            f"'{getattr(modelpool, 'name', modelpool)}' declares none (ModelPool.architecture())"
        )
    return modelpool.architecture()


@runtime_checkable
class DataModelPool(ModelPool, Protocol):
    """A model pool that can also hand out data and score a backbone on a task.

    Algorithms that are not data-free need this: the pool owns the data and the task heads, so the
    algorithm stays modality-free.
    """

    def batches(self, task: str, request: DataRequest, *, batch_size: int = 32) -> Iterator[tuple[Any, Any]]:
        """Yield ``(inputs, labels)`` for ``task``; ``labels`` is None when ``request.labelled`` is false."""

    def logits(self, task: str, model: Any, inputs: Any) -> torch.Tensor:
        """Class logits of ``model`` (a backbone of this pool) on ``inputs`` with ``task``'s head."""


@runtime_checkable
class Predictor(Protocol):
    """A fused model that combines its members' logits after the task head (e.g. a probability ensemble).

    Task pools score a backbone as ``head(model(inputs))``; rules that act after the head (mean of
    probabilities, majority vote, max-model) cannot be one backbone output, so such a model offers
    :meth:`predict_logits` and task pools call :func:`task_logits` instead.
    """

    def predict_logits(self, logits_of: Callable[[Any, Any], torch.Tensor], inputs: Any) -> torch.Tensor:
        """Scores ``(batch, classes)`` whose argmax is the prediction, from ``logits_of(member, inputs)``."""


def task_logits(model: Any, logits_of: Callable[[Any, Any], torch.Tensor], inputs: Any) -> torch.Tensor:
    """What a task pool computes for ``model`` on a batch: ``logits_of(model, inputs)``, or the predictor's rule.

    ``logits_of(backbone, inputs)`` is the pool's own scoring of one backbone on the task being evaluated
    (its head applied to the backbone's output). Every task pool should score through this function.
    """
    if isinstance(model, Predictor):
        return model.predict_logits(logits_of, inputs)
    return logits_of(model, inputs)


@dataclass(frozen=True)
class Predictions:
    """Per-example predictions of one task, in the task pool's fixed example order (for paired statistics).

    ``predicted[i]`` is the predicted class of example ``i`` and ``target[i]`` its label; two runs
    scored on the same split of the same task pool list the same examples in the same order, so
    ``fb compare`` can pair them.
    """

    predicted: tuple[int, ...]
    target: tuple[int, ...]


@dataclass
class EvaluationReport:
    """Per-task metrics of one model; :attr:`average` is their mean over tasks, metric by metric.

    :attr:`predictions` is optional: a task pool that fills it (task name → :class:`Predictions`)
    lets the result store keep per-example predictions; pools that leave it empty still work.
    """

    tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    predictions: dict[str, Predictions] = field(default_factory=dict)

    @property
    def average(self) -> dict[str, float]:
        """Mean of each metric over the tasks that report it."""
        sums: dict[str, list[float]] = {}
        for metrics in self.tasks.values():
            for metric, value in metrics.items():
                sums.setdefault(metric, []).append(float(value))
        return {metric: sum(values) / len(values) for metric, values in sums.items()}

    def to_dict(self) -> dict[str, Any]:
        """``{"tasks": ..., "average": ...}``."""
        return {"tasks": self.tasks, "average": self.average}


@runtime_checkable
class TaskPool(Protocol):
    """The tasks a fused model is evaluated on."""

    name: str

    @property
    def task_names(self) -> list[str]:
        """Names of the tasks, in report order."""

    def evaluate(self, model: Any) -> EvaluationReport:
        """Score ``model`` on every task."""

    # Optional: ``task_groups`` -> ``{group name: [task names]}`` (e.g. held-in and held-out tasks): the run
    # report then holds each group's average under ``groups`` (``fusionbench_core.run.group_averages``).


@runtime_checkable
class ScoresSplits(Protocol):
    """Optional task-pool capability: score a named split (``"validation"``, ``"test"``) on request.

    :attr:`split` is the split :meth:`TaskPool.evaluate` scores (set with the pool's ``split``
    option, default ``"test"``); :attr:`splits` lists every split the pool can score. ``fb sweep``
    uses :meth:`evaluate_split` to score one fused model on the validation split (to choose
    hyperparameters) and on the test split (to report), without fusing twice.
    """

    split: str
    splits: tuple[str, ...]

    def evaluate_split(self, model: Any, split: str) -> EvaluationReport:
        """Score ``model`` on every task's ``split``."""


@runtime_checkable
class Fingerprinted(Protocol):
    """Optional pool capability (model pools and task pools): a content hash of the pool's inputs.

    ``fingerprint()`` returns a stable hex digest of everything the pool feeds a run (weights, data,
    heads), so that ``fb sweep`` reruns a cell when an input changes although its name and options
    did not. Pools without it are keyed by their name, options and code version only.
    """

    def fingerprint(self) -> str:
        """A hex digest of the pool's inputs."""


@runtime_checkable
class BindsModelPool(Protocol):
    """Optional task-pool capability: be told which model pool the evaluated models come from.

    The run program (``fb run``) and ``fb eval`` call ``taskpool.bind(modelpool)`` once, right after
    both pools are built and before anything is evaluated. A task pool whose scoring depends on the
    model pool's settings (a suite's variant, its heads, its seed) reads them there, instead of from
    tags on the model objects, which fused models such as ensembles do not carry.
    """

    def bind(self, modelpool: ModelPool) -> None:
        """Remember what is needed of ``modelpool`` for the evaluations that follow."""


def bind_taskpool(taskpool: Any, modelpool: Any) -> None:
    """Call ``taskpool.bind(modelpool)`` when the task pool offers :class:`BindsModelPool`."""
    if isinstance(taskpool, BindsModelPool):
        taskpool.bind(modelpool)


class BaseTaskPool:
    """Convenience base class of task pools: a ``name`` and a no-op :meth:`bind`.

    Subclasses implement :attr:`task_names` and :meth:`evaluate`, and override :meth:`bind` when
    their scoring depends on the model pool (see :class:`BindsModelPool`).
    """

    name: str = ""

    def bind(self, modelpool: ModelPool) -> None:
        """Do nothing: most task pools score any model the same way."""

    @property
    def task_names(self) -> list[str]:  # pragma: no cover - abstract
        """Names of the tasks, in report order."""
        raise NotImplementedError

    def evaluate(self, model: Any) -> EvaluationReport:  # pragma: no cover - abstract
        """Score ``model`` on every task."""
        raise NotImplementedError


@runtime_checkable
class FusionAlgorithm(Protocol):
    """A fusion method: it turns a model pool into one fused model."""

    name: ClassVar[str]
    requirement: ClassVar[Requirement]
    hyperparameters: ClassVar[tuple[Hyperparameter, ...]]
    cost: dict[str, float]
    """What the run used beyond wall time and memory, e.g. ``{"forward_passes": 512}``."""

    def run(self, modelpool: ModelPool) -> Any:
        """Fuse the models of ``modelpool`` and return the fused model."""

    # Optional: ``needs``, the :class:`Capability` values the method needs of its pools beyond its requirement
    # (see :attr:`BaseAlgorithm.needs`). A method without it is checked for data only.


STRUCTURE_FILE = "structure.json"
"""In a saved model directory: the structure of a fused model that is not of its pool's architecture."""


@runtime_checkable
class SavesFusedModels(Protocol):
    """Optional method capability: save and load the fused models it makes itself.

    For methods whose fused model the pool's ``save_model``/``build_model`` cannot hold (model mixing:
    mixture-of-experts layers, more layers). After :meth:`FusionAlgorithm.run`, ``fb run --save-model``
    calls :meth:`save_fused` instead of the pool's ``save_model``. The directory must hold the weights as
    safetensors (never a pickle) and :data:`STRUCTURE_FILE`, a JSON object whose ``"method"`` is the
    registered method name; ``fb eval DIR`` finds that file and calls that method's :meth:`load_fused`.
    """

    def save_fused(self, model: Any, path: Any) -> None:
        """Write ``model`` (this method's fused model) into directory ``path``."""

    @classmethod
    def load_fused(cls, modelpool: ModelPool, path: Any) -> Any:
        """The fused model saved in directory ``path``, rebuilt on ``modelpool``'s architecture."""


class BaseAlgorithm:
    """Convenience base class: declared hyperparameters become typed attributes.

    Subclasses set :attr:`name`, :attr:`requirement`, :attr:`hyperparameters` and implement
    :meth:`run`. ``seed`` is set by the program before :meth:`run`; use it for every random draw.
    Each value is parsed and range-checked by its :class:`Hyperparameter` on construction; checks
    across several hyperparameters go in :meth:`validate`, which construction calls last, so
    ``fb run --dry-run`` and ``fb merge`` reject bad settings before any model is read.
    """

    name: ClassVar[str] = ""
    requirement: ClassVar[Requirement] = Requirement.DATA_FREE
    hyperparameters: ClassVar[tuple[Hyperparameter, ...]] = ()
    data: ClassVar[DataRequest | None] = None
    """The data this algorithm asks of its pool when it is not data-free."""
    needs: ClassVar[tuple[Capability, ...]] = ()
    """What the method needs of its pools beyond weights, e.g. ``(Capability.PRETRAINED, Capability.ARCHITECTURE)``.

    ``data`` and ``pretrained`` follow from :attr:`requirement` and ``needs_pretrained`` and need not be
    listed (:func:`method_needs`). ``fb methods show NAME`` lists the needs and the suites that meet them, and
    ``fb run`` refuses a pool that declares it lacks one, in one line, before any model is read. Declare only
    what holds for every setting of the hyperparameters; what depends on them stays a check in :meth:`run`.
    """

    def __init__(self, **settings: Any):
        self.cost: dict[str, float] = {}
        self.seed: int = 0
        declared = {hp.name: hp for hp in self.hyperparameters}
        unknown = [key for key in settings if key not in declared]
        if unknown:
            raise UnknownComponentError(
                "hyperparameter", unknown[0], declared, owner=f"method '{self.name or type(self).__name__}'"
            )
        for hp in self.hyperparameters:
            value = settings.get(hp.name, hp.default)
            setattr(self, hp.name, hp.parse(value, self.name) if value is not None else None)
        self.validate()

    def validate(self) -> None:
        """Check the hyperparameters together (each is already parsed and in its range); default: nothing.

        Raise :class:`~fusionbench_core.errors.ConfigError` with one line naming the settings and
        their values, e.g. DELLA's ``density ± epsilon`` must stay within [0, 1]::

            def validate(self):
                if not (0 <= self.density - self.epsilon and self.density + self.epsilon <= 1):
                    raise ConfigError(f"method 'della': density ± epsilon must lie in [0, 1], "
                                      f"got {self.density} ± {self.epsilon}")
        """

    @property
    def settings(self) -> dict[str, Any]:
        """The hyperparameters as set, in declaration order."""
        return {hp.name: getattr(self, hp.name) for hp in self.hyperparameters}

    def run(self, modelpool: ModelPool) -> Any:  # pragma: no cover - abstract
        """Fuse the models of ``modelpool``."""
        raise NotImplementedError


def require_pretrained(modelpool: ModelPool, method: str) -> None:
    """Raise a one-line error when ``method`` needs a base model that ``modelpool`` lacks."""
    if not modelpool.has_pretrained:
        raise ConfigError(f"method '{method}' needs a pretrained model, but model pool '{modelpool.name}' has none")


def check_same_keys(sources: Mapping[str, TensorSource], *, skip: Iterable[str] = ()) -> list[str]:
    """Return the common key list, or raise naming the model and key that differ."""
    from .errors import ShapeMismatchError

    names = list(sources)
    if not names:
        raise ConfigError("the model pool holds no models")
    reference_name = names[0]
    reference = sources[reference_name]
    keys = [key for key in reference.keys() if key not in set(skip)]
    wanted = set(keys)
    for other_name in names[1:]:
        other = sources[other_name]
        other_keys = {key for key in other.keys() if key not in set(skip)}
        missing = sorted(wanted - other_keys)
        extra = sorted(other_keys - wanted)
        if missing:
            raise ShapeMismatchError(f"model '{other_name}' lacks tensor '{missing[0]}' that '{reference_name}' has")
        if extra:
            raise ShapeMismatchError(f"model '{other_name}' has tensor '{extra[0]}' that '{reference_name}' lacks")
        for key in keys:
            a, b = reference.info(key), other.info(key)
            if a.shape != b.shape:
                raise ShapeMismatchError(
                    f"tensor '{key}' has shape {list(b.shape)} in model '{other_name}' "
                    f"but {list(a.shape)} in '{reference_name}'"
                )
    return keys
