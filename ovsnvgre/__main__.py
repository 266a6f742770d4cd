from ovsnvgre.cli import run

run()
