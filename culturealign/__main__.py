from culturealign.app.cli import main

main()
