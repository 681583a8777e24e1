"""deploykit: idempotent, plan-first deployment steps for the trading platform on Azure."""
