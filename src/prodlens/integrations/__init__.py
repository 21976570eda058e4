"""One module per framework. Import an integration from its own module, e.g.
``from prodlens.integrations.flask import ...``; ``ProdlensInstrumentor`` patches them all."""
