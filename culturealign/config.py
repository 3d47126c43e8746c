"""Config -> typed job description. Every check on user input happens here, before any request is sent."""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from culturealign.dataset import Country
from culturealign.errors import ConfigError
from culturealign.models import PROVIDERS
from culturealign.models.base import GenerateConfig
from culturealign.models.cache_store import check_settings as check_cache_settings
from culturealign.prompts import check_scenario_templates

CONF_DIR_NAME = "conf"
EXTRACTIONS = ("option_number", "judge")
ESTIMATORS = ("sample", "logprobs")
BOOTSTRAP_METHODS = ("percentile", "basic", "bca")
_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_KEY = re.compile(r"(api_?key|token|secret|password)$", re.IGNORECASE)


def conf_dir() -> Path:
    """The Hydra config folder: packaged inside the wheel, or the repo's top-level `conf/`."""
    here = Path(__file__).resolve().parent
    for candidate in (here / CONF_DIR_NAME, here.parent / CONF_DIR_NAME):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ConfigError(f"config folder not found next to {here}; reinstall culturealign")


@dataclass(frozen=True)
class Style:
    name: str
    extraction: str  # "option_number" or "judge"
    instruction: str | None  # B.2 / B.3 last line; None for scenarios
    max_tokens: int


def country_from(cfg: DictConfig, label_hint: str = "") -> Country:
    keys = cfg.get("keys")
    if not cfg.get("name") or not keys:
        raise ConfigError(f"country {label_hint!r} needs `name` (as in the prompt) and a non-empty `keys` list")
    return Country(label=str(cfg.get("label") or label_hint), name=str(cfg.name), keys=tuple(str(k) for k in keys))


def load_country(name: str) -> Country:
    """A country from the `country` config group by file name (used for `dataset.countries`)."""
    path = conf_dir() / "country" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"dataset.countries: unknown country {name!r}; known: {known} (or add conf/country/{name}.yaml)")
    return country_from(OmegaConf.load(path), name)


def style_from(cfg: DictConfig) -> Style:
    style = cfg.style
    if style.extraction not in EXTRACTIONS:
        raise ConfigError(f"style.extraction must be one of {', '.join(EXTRACTIONS)}, got {style.extraction!r}")
    return Style(style.name, style.extraction, style.get("instruction"), int(style.max_tokens))


def generate_config(model_cfg: DictConfig, style: Style | None, seed: int, top_logprobs: int = 0) -> GenerateConfig:
    max_tokens = model_cfg.get("max_tokens") or (style.max_tokens if style else None)
    return GenerateConfig(
        temperature=float(model_cfg.temperature),
        top_p=float(model_cfg.top_p),
        max_tokens=int(max_tokens) if max_tokens else None,
        seed=seed if model_cfg.provider == "llamacpp" else None,
        top_logprobs=top_logprobs,
    )


def validate(cfg: DictConfig) -> None:
    """Fail fast with one line naming the key and the fix."""
    _check_model(cfg.model, "model")
    if cfg.style.extraction == "judge":
        _check_model(cfg.judge, "judge")
    _require(isinstance(cfg.samples, int) and cfg.samples > 0, f"samples must be a positive integer, got {cfg.samples!r}")
    _require(
        isinstance(cfg.concurrency, int) and cfg.concurrency > 0,
        f"concurrency must be a positive integer, got {cfg.concurrency!r}",
    )
    _require(isinstance(cfg.get("dry_run", False), bool), f"dry_run must be true or false, got {cfg.get('dry_run')!r}")
    _require(cfg.estimator in ESTIMATORS, f"estimator must be one of {', '.join(ESTIMATORS)}, got {cfg.estimator!r}")
    _require(
        cfg.estimator == "sample" or cfg.style.extraction == "option_number",
        "estimator=logprobs works only with style=classification (free text needs sampling and a judge)",
    )
    boot = cfg.bootstrap
    _require(isinstance(boot.resamples, int) and boot.resamples >= 10, "bootstrap.resamples must be an integer >= 10")
    _require(0 < boot.confidence < 1, f"bootstrap.confidence must be in (0, 1), got {boot.confidence}")
    _require(boot.method in BOOTSTRAP_METHODS, f"bootstrap.method must be one of {', '.join(BOOTSTRAP_METHODS)}")
    limit = cfg.dataset.limit
    _require(limit is None or (isinstance(limit, int) and limit > 0), f"dataset.limit must be null or > 0, got {limit!r}")
    _require(bool(cfg.dataset.countries), "dataset.countries must list at least one country")
    n_options = cfg.dataset.n_options
    _require(
        isinstance(n_options, int) and n_options >= 2,
        f"dataset.n_options must be an integer >= 2, got {n_options!r}",
    )
    if cfg.style.name == "scenarios":
        check_scenario_templates(list(cfg.scenarios.templates))
    if cfg.cache.enabled:  # before MLflow logs the config: a password in cache.url must not reach it
        check_cache_settings(cfg.cache.url, cfg.cache.get("password_env"))


def _check_model(model_cfg: DictConfig, group: str) -> None:
    _require(model_cfg.provider in PROVIDERS, f"{group}.provider must be one of {', '.join(PROVIDERS)}")
    _check_no_secrets(model_cfg, group)
    temperature, top_p = model_cfg.temperature, model_cfg.top_p
    _require(
        _number(temperature) and 0 <= temperature <= 2,
        f"{group}.temperature must be a number in [0, 2], got {temperature!r}",
    )
    _require(_number(top_p) and 0 < top_p <= 1, f"{group}.top_p must be a number in (0, 1], got {top_p!r}")
    max_tokens = model_cfg.get("max_tokens")
    _require(
        max_tokens is None or (isinstance(max_tokens, int) and max_tokens > 0),
        f"{group}.max_tokens must be null or a positive integer, got {max_tokens!r}",
    )
    if model_cfg.provider == "openai":
        _require(
            str(model_cfg.base_url).startswith(("http://", "https://")),
            f"{group}.base_url must be an http(s) URL, got {model_cfg.base_url!r}",
        )
        n = model_cfg.get("n_per_request", 1)
        _require(isinstance(n, int) and n >= 1, f"{group}.n_per_request must be an integer >= 1, got {n!r}")
        _check_http_settings(model_cfg, group)


def _check_http_settings(model_cfg: DictConfig, group: str) -> None:
    timeout, retries = model_cfg.get("timeout"), model_cfg.get("max_retries")
    _require(_number(timeout) and timeout > 0, f"{group}.timeout must be a number of seconds > 0, got {timeout!r}")
    _require(
        isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0,
        f"{group}.max_retries must be an integer >= 0, got {retries!r}",
    )
    backoff = model_cfg.get("retry_backoff", 0.5)
    _require(
        _number(backoff) and backoff >= 0, f"{group}.retry_backoff must be a number of seconds >= 0, got {backoff!r}"
    )
    if urllib.parse.urlsplit(str(model_cfg.base_url)).password:
        raise ConfigError(
            f"{group}.base_url carries a password; remove it and put the key in the environment variable "
            f"named by {group}.api_key_env"
        )


def _check_no_secrets(model_cfg: DictConfig, group: str) -> None:
    """Keys come only from the environment: a key in the config would be logged with every run."""
    for key in model_cfg:
        if _SECRET_KEY.search(str(key)):
            raise ConfigError(
                f"{group}.{key}: do not put secrets in the config (it is logged); export the key in an "
                f"environment variable and set {group}.api_key_env to its name"
            )
    name = model_cfg.get("api_key_env")
    if name is not None and not _ENV_VAR_NAME.fullmatch(str(name)):
        raise ConfigError(
            f"{group}.api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
            "not the key itself; export the key and pass its variable name"
        )


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
