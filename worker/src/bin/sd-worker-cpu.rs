//! `sd-worker` under the name of the backend it was built for (`cpu`); the
//! same command line as `sd-worker` (see [`sd_worker::cli::main`]).

fn main() -> std::process::ExitCode {
    sd_worker::cli::main()
}
