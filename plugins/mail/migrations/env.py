from host_app.migrating import run_env

run_env()
