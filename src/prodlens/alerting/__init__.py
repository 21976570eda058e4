"""Alerting at scale: Prometheus rules for failing subgroups, and an Alertmanager receiver.

* :mod:`prodlens.alerting.rules`: recording and alerting rules over prodlens's cohort RED
  metrics (``prodlens rules``), and a Grafana dashboard (``prodlens rules --dashboard``);
* :mod:`prodlens.alerting.receiver`: ``prodlens notify``, an Alertmanager webhook receiver that
  resolves the customers inside a failing subgroup and messages them.

Nothing here is imported by ``import prodlens``.
"""
