from tinymono.cli import main

raise SystemExit(main())
