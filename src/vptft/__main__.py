from vptft.cli import main

main()
