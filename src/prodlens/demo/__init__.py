"""``prodlens demo``: a shop with a partial outage, tagged by prodlens and analysed end to end.

``shop`` is the demo web app (no prodlens code: it is instrumented from the environment),
``traffic`` drives customers at it and ``commands`` adds the ``demo`` sub-command. Needs
``pip install 'prodlens[demo]'``.
"""
