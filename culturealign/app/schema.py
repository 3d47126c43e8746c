"""Hydra's side of the spec: the dataclasses of `culturealign.spec` registered as the config schema, and a
composed config turned into a validated `JobSpec`.

With `job_schema` first in `conf/config.yaml`'s defaults, every group (model, judge, country, style,
scenarios, dataset, ...) is typed by its dataclass, so `samples=true`, `seed=abc`, `cache.enabled=maybe`,
`model.name=null`, an unknown key or provider are composition errors before anything runs.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from culturealign.errors import ConfigError
from culturealign.spec import PRICED_HOSTS, CountrySpec, JobSpec, Provider, Selection

CONF_DIR_NAME = "conf"
_SECRET_KEY = re.compile(r"(api_?key|token|secret|password|passwd|authorization|credentials?)$", re.IGNORECASE)
SCHEMA_NAME = "job_schema"


def register() -> None:
    ConfigStore.instance().store(name=SCHEMA_NAME, node=JobSpec)
    OmegaConf.register_new_resolver("model_endpoint", _model_endpoint, replace=True)
    OmegaConf.register_new_resolver("self_hosted_or", _self_hosted_or, replace=True)


def _self_hosted_or(provider, base_url, value, fallback):
    """`${self_hosted_or:${model.provider},${model.base_url},${model.X},fallback}`: the model's X when the
    model is a self-hosted OpenAI-compatible server (vLLM, llama.cpp server, a gateway: it serves no GPT-4,
    so the judge is the served model itself), else the fallback (GPT-4 at OpenAI, the paper's judge)."""
    hosted = urllib.parse.urlsplit(str(base_url or "")).hostname in PRICED_HOSTS
    return value if _model_endpoint(provider, True, False) and not hosted else fallback


def _model_endpoint(provider, value, fallback):
    """`${model_endpoint:${model.provider},${model.X},fallback}`: the model's X when the model is reached
    over HTTP (the judge then asks the same server), else the fallback (the judge's own endpoint)."""
    return value if getattr(provider, "value", provider) == Provider.openai.value else fallback


def conf_dir() -> Path:
    """The Hydra config folder: packaged inside the wheel, or the repo's top-level `conf/`."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / CONF_DIR_NAME, package.parent / CONF_DIR_NAME):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ConfigError(f"config folder not found next to {package}; reinstall culturealign")


def job_spec(cfg: DictConfig, choices: dict[str, str]) -> JobSpec:
    """The validated spec of a composed job config (raises a one-line ConfigError)."""
    refuse_secrets(cfg)
    spec = _typed(cfg, JobSpec)
    if spec.dataset.selection is Selection.per_country:  # each job asks every question its own country answered
        spec.selection = [spec.country]
    else:
        spec.selection = [load_country(name) for name in spec.dataset.countries]
    spec.choices = {group: str(choice) for group, choice in choices.items() if choice is not None}
    return spec.validate()


def compose_job(overrides: list[str]) -> tuple[JobSpec, str]:
    """The validated spec and the resolved config text that the CLI builds from these overrides (for the
    Python API: same config files, same schema, same group choices)."""
    register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    return job_spec(cfg, choices), OmegaConf.to_yaml(cfg, resolve=True)


def refuse_secrets(cfg: DictConfig, prefix: str = "") -> None:
    """Keys come only from the environment: a key in the config would be logged with every run. Checked on
    the raw config, so a key added with `+model.api_key=...` is refused before the schema sees it."""
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if _SECRET_KEY.search(str(key)):
            raise ConfigError(
                f"{path}: do not put secrets in the config (it is logged); export the key in an environment "
                "variable and name that variable in model.api_key_env / judge.api_key_env"
            )
        value = cfg._get_node(key)
        if isinstance(value, DictConfig):
            refuse_secrets(value, f"{path}.")


def load_country(name: str) -> CountrySpec:
    """A country from the `country` config group by file name (used for `dataset.countries`)."""
    path = conf_dir() / "country" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"dataset.countries: unknown country {name!r}; known: {known} (or add conf/country/{name}.yaml)")
    try:
        country = OmegaConf.merge(OmegaConf.structured(CountrySpec), OmegaConf.load(path))
    except OmegaConfBaseException as error:
        raise ConfigError(f"conf/country/{name}.yaml: {one_line(error)}") from None
    return _typed(country, CountrySpec)


def _typed(cfg: DictConfig, kind: type):
    if OmegaConf.get_type(cfg) is not kind:  # composed without the schema (a config of an older layout)
        cfg = OmegaConf.merge(OmegaConf.structured(kind), cfg)
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(one_line(error)) from None


def one_line(error: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line errors as one line: `key: problem` (with the choices, if any)."""
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    lines = str(cause).strip().splitlines()
    text = lines[0] if lines else type(cause).__name__
    key = getattr(cause, "full_key", None)
    if isinstance(cause, MissingMandatoryValue):
        return f"{key} needs a value: set {key}=... on the command line or in its config file"
    options = getattr(cause, "options", None)
    if options:
        text += f"; available: {', '.join(options)}"
    return f"{key}: {text}" if key and not text.startswith(str(key)) else text
