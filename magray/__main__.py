from magray.cli import main

main()
