from pyslirp.cli import main

raise SystemExit(main())
