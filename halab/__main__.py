from halab.cli import main

raise SystemExit(main())
