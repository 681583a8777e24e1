"""Monthly cost estimates from the SKUs the playbooks declare, and the price table they use."""
