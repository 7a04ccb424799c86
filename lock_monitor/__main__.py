from lock_monitor.cli import main

main()
