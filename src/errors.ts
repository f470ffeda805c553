// The two ways the program ends on purpose: a command line or configuration it cannot take (exit 2, with a
// pointer to --help), and a proxy that cannot start (exit 1, one line saying why). Anything else is a bug and
// keeps its stack trace.
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** The proxy cannot start (no usable kubeconfig, a port it must bind is busy with --bind-address-hard-fail, ...). */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}
