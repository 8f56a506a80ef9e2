from sepconv_cli.cli import main

main()
