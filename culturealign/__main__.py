from culturealign.cli import main

main()
