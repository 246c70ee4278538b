from wskreplay.cli import main

main()
