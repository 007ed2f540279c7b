from modelyard_cli.main import main

main()
