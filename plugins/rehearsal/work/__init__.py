"""Plain functions doing each phase's work (SQL, HTTP, subprocesses); no Airflow needed to call them."""
