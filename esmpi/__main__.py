from esmpi.cli import main

raise SystemExit(main())
