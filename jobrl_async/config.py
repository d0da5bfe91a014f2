"""The one place for configuration: a typed tree, loaded from defaults < TOML file < env < flags.

Environment overrides use `JOBRL_SECTION__KEY` (e.g. `JOBRL_JUDGE__RPM=600`); the value is read
as a TOML value when it parses as one (`600`, `true`, `["q_proj"]`), else as a string.
Secrets never live here: they come from the environment only (see `Secrets`).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import orjson

from .errors import ConfigError

BUNDLED_DATASET = "bundled"
TINY_MODEL = "tiny"
SEED_CHECKPOINTS = "s3://job-offer-generation/job-offer-generation/job-offer-agent/checkpoints"
SEED_DATASET = "s3://job-offer-generation/datasets/job_offer_dataset.json"


def _check(*, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> dict:
    return {"lo": lo, "hi": hi, "lo_open": lo_open}


@dataclass
class DataConfig:
    dataset: str = BUNDLED_DATASET  # "bundled", a path, file:// or s3:// URI
    validation_fraction: float = field(default=0.1, metadata=_check(lo=0.0, hi=0.9, lo_open=True))
    seed: int = 42
    max_records: int = field(default=100_000, metadata=_check(lo=1))


@dataclass
class ModelConfig:
    name: str = "google/gemma-3-270m-it"  # hub id, local folder, or "tiny" (embedded)
    torch_threads: int = field(default=1, metadata=_check(lo=0))  # 0: torch's own default
    omp_wait_policy: Literal["PASSIVE", "ACTIVE", "unset"] = "PASSIVE"
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str = "sdpa"
    cache_dir: str = ""  # unused since the tiny model ships in the package; kept so that older configs load


@dataclass
class LoraConfig:
    r: int = field(default=16, metadata=_check(lo=1))
    alpha: int = field(default=32, metadata=_check(lo=1))
    target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
        ]
    )


@dataclass
class GenerationConfig:
    max_new_tokens: int = field(default=512, metadata=_check(lo=1, hi=8192))
    temperature: float = field(default=1.0, metadata=_check(lo=0.0, lo_open=True, hi=5.0))
    top_p: float = field(default=1.0, metadata=_check(lo=0.0, lo_open=True, hi=1.0))
    top_k: int = field(default=0, metadata=_check(lo=0))  # 0: no top-k (transformers' 50 is off)
    batch_size: int = field(default=128, metadata=_check(lo=1))  # sequences per device job
    # static: the lean decode loop (generation/decode.py); hf: transformers' generate(), the reference
    engine: Literal["static", "hf"] = "static"
    compile: Literal["auto", "on", "off"] = "auto"  # the static engine's decode step; auto: on CUDA
    seed: int = 1234


@dataclass
class GeneratorConfig:
    """Where sampling happens: in this process, or on OpenAI-compatible servers (vLLM)."""

    backend: Literal["local", "vllm"] = "local"
    urls: list[str] = field(default_factory=list)  # vllm: one or more servers, round robin
    model: str = ""  # the servers' --served-model-name; "" = model.name
    max_concurrency: int = field(default=32, metadata=_check(lo=1))
    timeout_s: float = field(default=600.0, metadata=_check(lo=0.0, lo_open=True))
    max_retries: int = field(default=5, metadata=_check(lo=0))
    backoff_max_s: float = field(default=30.0, metadata=_check(lo=0.0, lo_open=True))
    adapter_root: str = ""  # where adapters are written for the servers; "" = a temp folder
    server_adapter_root: str = ""  # the same folder as the servers see it; "" = same path
    sync_every_steps: int = field(default=1, metadata=_check(lo=1))
    unload_stale: bool = True


@dataclass
class TrainingConfig:
    batch_contexts: int = field(default=10, metadata=_check(lo=1))
    attempts: int = field(default=10, metadata=_check(lo=2))
    epochs: int = field(default=3, metadata=_check(lo=1))
    max_policy_lag: int = field(default=1, metadata=_check(lo=0))
    learning_rate: float = field(default=2e-5, metadata=_check(lo=0.0, lo_open=True, hi=1.0))
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = field(default=0, metadata=_check(lo=0))
    weight_decay: float = field(default=0.0, metadata=_check(lo=0.0))
    max_grad_norm: float = field(default=1.0, metadata=_check(lo=0.0, lo_open=True))
    micro_batch_size: int = field(default=8, metadata=_check(lo=1))
    clip_eps_low: float = field(default=0.2, metadata=_check(lo=0.0, lo_open=True, hi=1.0))
    clip_eps_high: float = field(default=0.28, metadata=_check(lo=0.0, lo_open=True, hi=10.0))
    scale_rewards: Literal["group", "none"] = "group"
    loss_aggregation: Literal["token_mean", "sequence_mean"] = "token_mean"
    beta: float = field(default=0.0, metadata=_check(lo=0.0))  # KL to the base model
    truncated: Literal["keep", "mask"] = "keep"
    # decoupled: PPO ratio against the trainer's own log-probs, sampler mismatch and lag in a
    # truncated importance weight; behaviour: the ratio against the sampler (see learning/grpo.py)
    off_policy_correction: Literal["decoupled", "behaviour"] = "decoupled"
    tis_cap: float = field(default=2.0, metadata=_check(lo=0.0))  # C of the weight (dual clip in behaviour); 0: none
    # optimizer steps per batch (AReaL's minibatches): > 1 gives the PPO clip a trust region to bound
    minibatches: int = field(default=1, metadata=_check(lo=1))
    seed: int = 7


@dataclass
class ValidationConfig:
    attempts: int = field(default=2, metadata=_check(lo=1))
    every_steps: int = field(default=1, metadata=_check(lo=0))  # 0: never
    max_contexts: int = field(default=0, metadata=_check(lo=0))  # 0: the whole split
    # a round with more judge failures than this never decides `best` (its mean is too thin)
    max_failed_share: float = field(default=0.1, metadata=_check(lo=0.0, hi=1.0))


@dataclass
class EndpointConfig:
    """One deployment of the judge pool (`[[judge.endpoints]]`); its key comes from `api_key_env`."""

    name: str = ""
    kind: Literal["azure", "openai"] = "azure"
    url: str = ""  # the Azure endpoint, or an OpenAI-compatible base URL
    deployment: str = ""  # azure
    model: str = ""  # openai; "" = judge.model
    api_version: str = ""  # azure; "" = judge.api_version
    api_key_env: str = ""  # the NAME of the environment variable holding the key, never the key
    auth: Literal["", "key", "entra"] = ""  # "" = judge.auth
    rpm: int = field(default=600, metadata=_check(lo=0))  # 0: no quota (a local server)
    tpm: int = field(default=100_000, metadata=_check(lo=0))


@dataclass
class JudgeConfig:
    mode: Literal["llm", "stub", "hybrid"] = "llm"
    rpm: int = field(default=600, metadata=_check(lo=0))  # 0: no quota (a local server): concurrency only
    tpm: int = field(default=100_000, metadata=_check(lo=0))
    max_concurrency: int = field(default=32, metadata=_check(lo=1))
    timeout_s: float = field(default=30.0, metadata=_check(lo=0.0, lo_open=True))
    max_retries: int = field(default=6, metadata=_check(lo=0))
    backoff_max_s: float = field(default=60.0, metadata=_check(lo=0.0, lo_open=True))
    window_s: float = field(default=1.0, metadata=_check(lo=0.0, lo_open=True))  # the server's quota window
    breaker_failures: int = field(default=5, metadata=_check(lo=1))  # consecutive, to pause
    probe_interval_s: float = field(default=15.0, metadata=_check(lo=0.0, lo_open=True))
    model: str = "gpt-5-mini"  # OpenAI-compatible servers; Azure uses the deployment
    api_version: str = "2025-04-01-preview"  # Azure's deployments path (a v1 URL takes none)
    auth: Literal["key", "entra"] = "key"  # entra: an Entra ID token (pip install 'jobrl-async[azure]')
    max_tokens: int = field(default=200, metadata=_check(lo=16))  # a per_criterion call's reply: one verdict
    max_tokens_per_offer: int = field(default=0, metadata=_check(lo=0))  # a per_offer call's; 0: 20 + 60 per criterion
    # auto: classic (temperature 0, max_tokens) until a 400 says the model reasons; learnt per endpoint
    dialect: Literal["auto", "classic", "reasoning"] = "auto"
    reasoning_effort: Literal["lowest", "none", "minimal", "low", "medium", "high"] = "lowest"
    max_reasoning_tokens: int = field(default=8192, metadata=_check(lo=0))  # cap of the learnt allowance
    json_mode: bool = True  # structured replies (response_format); false: prose, parsed as ever
    response_format: Literal["json_schema", "json_object"] = "json_schema"  # the first tried; falls back
    price_input_per_mtok: float = field(default=0.0, metadata=_check(lo=0.0))  # USD per 1M tokens; 0: unknown
    price_cached_input_per_mtok: float = field(default=0.0, metadata=_check(lo=0.0))
    price_output_per_mtok: float = field(default=0.0, metadata=_check(lo=0.0))  # reasoning tokens included
    stub_latency_ms: float = field(default=0.0, metadata=_check(lo=0.0))
    stub_jitter: float = field(default=0.2, metadata=_check(lo=0.0, hi=1.0))
    calls: Literal["per_criterion", "per_offer"] = "per_criterion"  # per_offer: one call for every LLM criterion
    endpoints: list[EndpointConfig] = field(default_factory=list)  # none: the standard variables' endpoint
    dedup_max_entries: int = field(default=10_000, metadata=_check(lo=0))  # identical offers judged once; 0: off


@dataclass
class CheckpointsConfig:
    uri: str = SEED_CHECKPOINTS
    latest_every_steps: int = field(default=1, metadata=_check(lo=0))  # 0: only at shutdown
    keep_latest: int = field(default=2, metadata=_check(lo=1))
    max_pending: int = field(default=2, metadata=_check(lo=1))
    max_attempts: int = field(default=8, metadata=_check(lo=1))  # per checkpoint, then it is given up
    lease_timeout_s: float = field(default=120.0, metadata=_check(lo=1.0))  # a silent lease owner expires
    max_file_mb: int = field(default=4096, metadata=_check(lo=1))  # largest checkpoint file read back


@dataclass
class PipelineConfig:
    schedule: Literal["pipelined", "sequential"] = "pipelined"
    judge_queue: int = field(default=0, metadata=_check(lo=0))  # 0: sized from the batch
    shutdown_grace_s: float = field(default=20.0, metadata=_check(lo=0.0))
    max_steps: int = field(default=0, metadata=_check(lo=0))  # 0: run the configured epochs
    resume: bool = True


@dataclass
class StorageConfig:
    max_concurrency: int = field(default=8, metadata=_check(lo=1))
    multipart_threshold_mb: int = field(default=16, metadata=_check(lo=5))
    multipart_chunk_mb: int = field(default=8, metadata=_check(lo=5))
    max_attempts: int = field(default=5, metadata=_check(lo=1))
    region: str = ""  # "" = AWS_REGION / AWS_DEFAULT_REGION / profile
    profile: str = ""


@dataclass
class LoggingConfig:
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"
    phases: Literal["auto", "on", "off"] = "auto"  # a line on stderr per start-up phase; auto: on a terminal


@dataclass
class MetricsConfig:
    port: int = field(default=0, metadata=_check(lo=0, hi=65535))  # 0: no endpoint
    host: str = "127.0.0.1"
    stall_timeout_s: float = field(default=600.0, metadata=_check(lo=0.0, lo_open=True))


@dataclass
class WandbConfig:
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: online iff WANDB_API_KEY
    project: str = "jobrl-async"
    entity: str = ""
    run_name: str = ""


@dataclass
class ReportConfig:
    every_steps: int = field(default=10, metadata=_check(lo=0))  # report.html every N steps; 0: off


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    checkpoints: CheckpointsConfig = field(default_factory=CheckpointsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # where each key's value came from: "section.key" -> default | file | env | flag
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # removed keys that were set: "section.key" -> why it is gone (logged once logging is on)
    removed: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        out = asdict(self)
        out.pop("sources")
        out.pop("removed")
        return out

    def digest(self) -> str:
        """A short stable hash of the effective configuration (stored in checkpoints)."""
        blob = orjson.dumps(self.as_dict(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(blob).hexdigest()[:16]

    def is_set(self, key: str) -> bool:
        """Whether `section.key` was named by a file, the environment or a flag."""
        return self.sources.get(key, "default") != "default"


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(Config) if f.name not in ("sources", "removed")}  # type: ignore[misc]

# Keys that existed once: still accepted (a config that names one keeps working), ignored, and
# named in a `config_key_removed` warning with the reason.
REMOVED_KEYS = {
    "lora.dropout": "it never had an effect: the learner runs in eval mode (dropout off) so that its PPO "
                    "ratio and the proximal log-probs see no dropout noise; remove the key",
}


# ---------------------------------------------------------------- secrets (environment only)

SECRET_ENV = (
    "AZURE_OPENAI_API_KEY",
    "OPENAI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",  # the older name of the session token, still read by boto
    "WANDB_API_KEY",
    "HF_TOKEN",  # gated models (Gemma) on a user's machine
    "HUGGING_FACE_HUB_TOKEN",  # HF_TOKEN's older name
    "AZURE_CLIENT_SECRET",  # Entra ID (judge.auth = "entra"): a service principal's secret
    "VLLM_API_KEY",  # remote generation servers started with --api-key
)


@dataclass(frozen=True)
class Secrets:
    """Credentials and endpoints from the environment. `repr` never shows a value."""

    azure_api_key: str = field(default="", repr=False)
    azure_endpoint: str = field(default="", repr=False)  # a URL may carry user:password@
    azure_deployment: str = ""
    openai_api_key: str = field(default="", repr=False)
    openai_base_url: str = field(default="", repr=False)
    wandb_api_key: str = field(default="", repr=False)
    vllm_api_key: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: typing.Mapping[str, str] | None = None) -> "Secrets":
        env = os.environ if env is None else env
        return cls(
            azure_api_key=env.get("AZURE_OPENAI_API_KEY", ""),
            azure_endpoint=env.get("AZURE_OPENAI_ENDPOINT", ""),
            azure_deployment=env.get("AZURE_DEPLOYMENT_NAME", ""),
            openai_api_key=env.get("OPENAI_API_KEY", ""),
            openai_base_url=env.get("OPENAI_BASE_URL", ""),
            wandb_api_key=env.get("WANDB_API_KEY", ""),
            vllm_api_key=env.get("VLLM_API_KEY", ""),
        )

    @property
    def judge_backend(self) -> Literal["azure", "openai", "none"]:
        if self.azure_api_key and self.azure_endpoint and self.azure_deployment:
            return "azure"
        if self.openai_api_key:
            return "openai"
        return "none"


SECRET_URL_ENV = ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT")  # their user:password@ is secret


# Secrets met while loading a config: passwords in `judge.endpoints[].url`, a key pasted into
# `api_key_env` by mistake. The log redactor takes them with the environment's.
_config_secrets: set[str] = set()


def url_password(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password or ""
    except ValueError:  # not a URL at all: the judge client will say so
        return ""


def secret_values(env: typing.Mapping[str, str] | None = None) -> list[str]:
    """Every secret value present in the environment (for the log redactor), URL passwords
    included, and those a loaded config held."""
    env = os.environ if env is None else env
    values = [env[name] for name in SECRET_ENV if len(env.get(name, "")) >= 4]
    values += [p for p in (url_password(env.get(name, "")) for name in SECRET_URL_ENV) if len(p) >= 4]
    return values + sorted(v for v in _config_secrets if len(v) >= 4)


# ---------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike | None = None,
    *,
    env: typing.Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Defaults < TOML file < `JOBRL_*` environment < `overrides` ("section.key" -> value)."""
    env = os.environ if env is None else env
    cfg = Config()
    cfg.sources = {f"{s}.{f.name}": "default" for s, cls in SECTIONS.items() for f in fields(cls)}
    if path is not None:
        _apply(cfg, _flatten(_read_toml(Path(path)), origin=str(path)), "file", str(path))
    for dotted, (var, value) in _env_values(env).items():
        _apply(cfg, {dotted: value}, "env", f"environment variable {var}")
    if overrides:
        _apply(cfg, {k: v for k, v in overrides.items() if v is not None}, "flag", "command line")
    _check_generator(cfg)
    return cfg


def _check_generator(cfg: Config) -> None:
    """Remote samplers run on the last published adapter: published every `sync_every_steps`
    steps, a step may be sampled `sync_every_steps - 1` versions behind on top of the allowed lag."""
    sync, lag = cfg.generator.sync_every_steps, cfg.training.max_policy_lag
    if cfg.generator.backend == "vllm" and sync > lag + 1:
        raise ConfigError(f"'generator.sync_every_steps' = {sync} exceeds 'training.max_policy_lag' + 1 = {lag + 1}: "
                          f"the servers would sample from a policy older than the staleness bound allows")


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None


def _flatten(doc: dict, origin: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, body in doc.items():
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section '{section}'{_did_you_mean(section, SECTIONS)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{origin}: '{section}' must be a table ([{section}])")
        for key, value in body.items():
            flat[f"{section}.{key}"] = value
    return flat


ENV_PREFIX = "JOBRL_"


def _env_values(env: typing.Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """`JOBRL_SECTION__KEY=value` -> {"section.key": ("JOBRL_SECTION__KEY", value)}."""
    out: dict[str, tuple[str, Any]] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].partition("__")
        out[f"{section.lower()}.{key.lower()}"] = (name, _parse_env_value(raw))
    return out


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply(cfg: Config, values: dict[str, Any], source: str, origin: str) -> None:
    for dotted, value in values.items():
        section, _, key = dotted.partition(".")
        if dotted in REMOVED_KEYS:
            cfg.removed[dotted] = f"{origin}: '{dotted}' is no longer a setting: {REMOVED_KEYS[dotted]}"
            continue
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section '{section}'{_did_you_mean(section, SECTIONS)}")
        target = getattr(cfg, section)
        spec = {f.name: f for f in fields(target)}
        if key not in spec:
            known = [f"{section}.{k}" for k in spec]
            raise ConfigError(f"{origin}: unknown key '{dotted}'{_did_you_mean(dotted, known)}")
        setattr(target, key, _coerce(dotted, value, spec[key], origin))
        cfg.sources[dotted] = source


def _coerce(key: str, value: Any, f: Any, origin: str) -> Any:
    hint = _field_type(f)
    if get_origin(hint) is list and is_dataclass(get_args(hint)[0]):
        return _coerce_tables(key, value, get_args(hint)[0], origin)
    ok, value = _matches(hint, value)
    if not ok:
        raise ConfigError(f"{origin}: '{key}' must be {_describe(hint)}, got {value!r}")
    bounds = f.metadata
    if bounds and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = bounds.get("lo"), bounds.get("hi")
        if lo is not None and (value < lo or (bounds.get("lo_open") and value == lo)):
            rel = ">" if bounds.get("lo_open") else ">="
            raise ConfigError(f"{origin}: '{key}' must be {rel} {lo}, got {value!r}")
        if hi is not None and value > hi:
            raise ConfigError(f"{origin}: '{key}' must be <= {hi}, got {value!r}")
    return value


def _coerce_tables(key: str, value: Any, cls: type, origin: str) -> list[Any]:
    """A list of tables (`[[judge.endpoints]]`) as typed dataclasses; errors name `key[i].field`."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{origin}: '{key}' must be a list of tables ([[{key}]]), got {value!r}")
    spec = {f.name: f for f in fields(cls)}
    out = []
    for i, table in enumerate(value):
        item = cls()
        for name, v in table.items():
            if name not in spec:
                raise ConfigError(f"{origin}: unknown key '{key}[{i}].{name}'{_did_you_mean(name, spec)}")
            setattr(item, name, _coerce(f"{key}[{i}].{name}", v, spec[name], origin))
        if isinstance(item, EndpointConfig):
            _check_endpoint(item, f"{key}[{i}]", origin)
        out.append(item)
    return out


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_endpoint(endpoint: EndpointConfig, where: str, origin: str) -> None:
    """Register the endpoint's URL password as a secret; refuse a key pasted into `api_key_env`
    (without ever repeating it: it is registered as a secret too)."""
    _config_secrets.add(url_password(endpoint.url))
    if endpoint.api_key_env and not _VARIABLE_NAME.fullmatch(endpoint.api_key_env):
        _config_secrets.add(endpoint.api_key_env)
        raise ConfigError(f"{origin}: '{where}.api_key_env' must be the NAME of the environment variable "
                          "holding the key (letters, digits and _), not the key itself")


_HINTS: dict[int, Any] = {}


def _field_type(f: Any) -> Any:
    # Field annotations are strings under `from __future__ import annotations`: resolve once.
    if id(f) not in _HINTS:
        for cls in (*SECTIONS.values(), EndpointConfig):
            hints = typing.get_type_hints(cls)
            for g in fields(cls):
                _HINTS[id(g)] = hints[g.name]
    return _HINTS[id(f)]


def _matches(hint: Any, value: Any) -> tuple[bool, Any]:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if hint is str:
        return isinstance(value, str), value
    if origin is list:
        (item,) = get_args(hint)
        if isinstance(value, str):  # "a,b" from the environment
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(_matches(item, v)[0] for v in value):
            return True, list(value)
        return False, value
    if origin in (types.UnionType, typing.Union):
        for arm in get_args(hint):
            ok, v = _matches(arm, value)
            if ok:
                return True, v
        return False, value
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in this file, not user input


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if get_origin(hint) is list:
        return f"a list of {_describe(get_args(hint)[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, str(hint))


def _did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---------------------------------------------------------------- showing


def render_toml(cfg: Config) -> str:
    """The effective configuration as TOML, with where each value came from."""
    lines: list[str] = []
    for section, body in cfg.as_dict().items():
        lines.append(f"[{section}]")
        for key, value in body.items():
            src = cfg.sources.get(f"{section}.{key}", "default")
            lines.append(f"{key} = {_toml_value(value)}" + ("" if src == "default" else f"  # {src}"))
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # a table of a list of tables, inline
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return orjson.dumps(str(value)).decode()
