fn main() -> std::process::ExitCode {
    sd_worker::cli::main()
}
