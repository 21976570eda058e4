"""Entry point of ``OTEL_TRACES_SAMPLER=prodlens``; the sampler lives in
:mod:`prodlens.signals.sampling`."""

from prodlens.signals.sampling import ProdlensSampler, TokenBucket, sampler_factory

__all__ = ["ProdlensSampler", "TokenBucket", "sampler_factory"]
