"""Settings: environment, typed overrides and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider

import prodlens
from prodlens.config import PARAMETERS, Source, load_settings


def test_defaults():
    settings = load_settings({})
    assert settings.enabled is True
    assert settings.customer_attribute == "enduser.id"
    assert settings.cohort_prefix == "prodlens.cohort."
    assert settings.max_cohort_values == 100
    assert settings.max_value_length == 128
    assert settings.customer_from == (Source("user"),)
    assert settings.propagate_to == ()


def test_every_parameter_accepts_its_default_and_its_example():
    for param in PARAMETERS:
        param.parse(param.default) if param.default or not param.secret else None
        param.parse(param.example)


def test_environment_and_overrides():
    env = {
        "PRODLENS_MAX_COHORT_VALUES": "7",
        "PRODLENS_CUSTOMER_FROM": "jwt:sub, Header:X-Customer",
        "PRODLENS_COHORT_PLAN_FROM": "jwt:plan,header:x-plan",
        "PRODLENS_PROPAGATE_TO": "*.internal,10.0.0.0/8",
    }
    settings = load_settings(env, {"max_value_length": 12})
    assert settings.max_cohort_values == 7
    assert settings.max_value_length == 12
    assert settings.customer_from == (Source("jwt", "sub"), Source("header", "x-customer"))
    assert settings.cohort_sources == {"plan": (Source("jwt", "plan"), Source("header", "x-plan"))}
    assert settings.propagate_to == ("*.internal", "10.0.0.0/8")
    assert settings.origins["max_cohort_values"] == "environment"
    assert settings.origins["max_value_length"] == "configure()"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PRODLENS_ENABLED": "maybe"}, "PRODLENS_ENABLED=maybe (from the environment) is not "
         "valid: expected one of true, false"),
        ({"PRODLENS_MAX_COHORT_VALUES": "-3"}, "PRODLENS_MAX_COHORT_VALUES=-3 (from the "
         "environment) is not valid: expected a whole number >= 1"),
        ({"PRODLENS_PSEUDONYMIZE": "true"}, "PRODLENS_PSEUDONYM_KEY"),
        ({"PRODLENS_PSEUDONYM_KEY": "short"}, "PRODLENS_PSEUDONYM_KEY=(hidden)"),
        ({"PRODLENS_CUSTOMER_FROM": "headr:x"}, "unknown kind 'headr'"),
        ({"PRODLENS_CUSTOMER_FROM": "header:"}, "PRODLENS_CUSTOMER_FROM=header:"),
        ({"PRODLENS_COHORT_PLAN_FROM": "jwt"}, "PRODLENS_COHORT_PLAN_FROM=jwt"),
        ({"PRODLENS_PROPAGATE_TO": "10.0.0.0/99"}, "is not a CIDR range"),
        ({"PRODLENS_SAMPLE_RATIO": "1.5"}, "a number from 0 to 1"),
    ],
)
def test_malformed_values_name_the_variable_value_and_grammar(env, message):
    with pytest.raises(prodlens.ConfigError) as error:
        load_settings(env)
    assert message in str(error.value)


def test_configure_raises_config_error_for_bad_arguments():
    with pytest.raises(prodlens.ConfigError, match=r"PRODLENS_MAX_COHORT_VALUES=-1 \(from "
                       r"configure\(max_cohort_values=\.\.\.\)\)"):
        prodlens.configure(TracerProvider(), environ={}, max_cohort_values=-1)


def test_config_command_prints_settings_and_fails_clearly():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODLENS_")}
    ok = subprocess.run(
        [sys.executable, "-m", "prodlens", "config"],
        env={**env, "PRODLENS_COHORT_PLAN_FROM": "jwt:plan", "PRODLENS_PSEUDONYM_KEY": "s" * 20},
        capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert any(line.split() == ["PRODLENS_MAX_COHORT_VALUES", "100", "default"] for line in lines)
    assert any(line.split() == ["PRODLENS_COHORT_PLAN_FROM", "jwt:plan", "environment"]
               for line in lines)
    assert any(line.split()[:2] == ["PRODLENS_PSEUDONYM_KEY", "(set)"] for line in lines)
    assert "s" * 20 not in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "prodlens", "config"],
        env={**env, "PRODLENS_MAX_VALUE_LENGTH": "zero"},
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2
    assert "PRODLENS_MAX_VALUE_LENGTH=zero (from the environment) is not valid" in bad.stderr


def test_noop_global_provider_warns_once_and_tags_nothing():
    code = (
        "import logging, prodlens\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "prodlens.configure(environ={})\n"
        "prodlens.configure(environ={})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODLENS_", "OTEL_"))}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("no-op proxy") == 1
    assert "opentelemetry-distro" in result.stderr


def test_the_notification_variables_of_watch_and_notify_are_not_unknown_settings():
    # PRODLENS_NOTIFY_* configure `prodlens watch` / `prodlens notify`, not the in-app library:
    # an app that shares their environment must not be warned about them.
    from prodlens.config import read_environment

    _, problems = read_environment({
        "PRODLENS_NOTIFY_URL": "http://127.0.0.1:9/hook",
        "PRODLENS_NOTIFY_CUSTOMERS_URL": "http://127.0.0.1:9/customers",
        "PRODLENS_NOTIFY_TOKEN": "secret",
        "PRODLENS_NOTIFI_URL": "http://127.0.0.1:9/typo",
    })
    assert [problem.variable for problem in problems] == ["PRODLENS_NOTIFI_URL"]
