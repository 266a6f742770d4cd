from ovsnvgre.cli import main

main()
