"""`python -m train.nodecheck`: will this node give trustworthy numbers? See docs/nodecheck.md."""
