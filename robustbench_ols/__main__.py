from robustbench_ols.cli import main

raise SystemExit(main())
