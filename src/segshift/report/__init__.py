"""Reports: figures and tables that summarise domains, models and benchmark results."""
