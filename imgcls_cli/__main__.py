from imgcls_cli.cli import main

raise SystemExit(main())
