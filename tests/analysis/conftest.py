"""Synthetic exports shared by the analysis tests (generated once per session, real SDK)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prodlens.analysis.synthetic import MeshTraces, SyntheticTraces, generate, generate_mesh


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTraces:
    """3,000 requests with eu-west customers on api 2.3.0 failing 20% (0.5% elsewhere)."""
    return generate(tmp_path_factory.mktemp("planted"), traces=3000, seed=7)


@pytest.fixture(scope="session")
def planted_dir(planted: SyntheticTraces) -> Path:
    return planted.paths[0].parent


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> MeshTraces:
    """4,000 requests through five services: the payments canary failing 25%, search failing
    30% for free ap-south customers, handled 404s and database deadlocks, id-like attributes."""
    return generate_mesh(tmp_path_factory.mktemp("mesh"), traces=4000, seed=1,
                         second_incident=True)


@pytest.fixture(scope="session")
def mesh_dir(mesh: MeshTraces) -> Path:
    return mesh.paths[0].parent
