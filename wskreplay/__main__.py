from wskreplay.cli import run

run()
