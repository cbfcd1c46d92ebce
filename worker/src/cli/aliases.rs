//! Flag aliases for people coming from Candle's stable-diffusion example and
//! similar workers: `--sd-version`, `--cuda-device`, `--use-flash-attn`,
//! `--bind-addr` (and `--callback-url`, a clap alias of `--hive-url`).
//! [`ServeArgs::apply_aliases`] folds them into the flags they stand for
//! before anything starts (docs/API.md, "Command-line aliases").

use super::ServeArgs;
use anyhow::{bail, Result};
use clap::ValueEnum;

/// Model names in the style of Candle's `--sd-version` / `--which`, each the
/// same as one `--model` hub alias (`model::source::ALIASES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SdVersion {
    /// Stable Diffusion 1.5 (`--model sd15`).
    #[value(name = "v1-5")]
    V1_5,
    /// Stable Diffusion 1.5 inpainting (`--model sd15-inpainting`).
    #[value(name = "v1-5-inpaint")]
    V1_5Inpaint,
    /// Stable Diffusion 2 base, 512x512 (`--model sd2-base`).
    #[value(name = "v2-base")]
    V2Base,
    /// Stable Diffusion 2.1, 768x768 (`--model sd21`).
    #[value(name = "v2-1")]
    V2_1,
    /// Stable Diffusion 2.1 base, 512x512 (`--model sd21-base`).
    #[value(name = "v2-1-base")]
    V2_1Base,
    /// SD-Turbo, distilled SD 2.1 (`--model sd-turbo`).
    #[value(name = "sd-turbo")]
    SdTurbo,
    /// SDXL base 1.0 (`--model sdxl`).
    #[value(name = "xl")]
    Xl,
    /// SDXL-Turbo, as Candle's `turbo` (`--model sdxl-turbo`).
    #[value(name = "turbo")]
    Turbo,
    /// SD 3 Medium (`--model sd3-medium`).
    #[value(name = "sd3-medium", alias = "3-medium")]
    Sd3Medium,
    /// SD 3.5 Medium (`--model sd3.5-medium`).
    #[value(name = "sd3.5-medium", alias = "3.5-medium")]
    Sd35Medium,
    /// SD 3.5 Large (`--model sd3.5-large`).
    #[value(name = "sd3.5-large", alias = "3.5-large")]
    Sd35Large,
    /// SD 3.5 Large Turbo (`--model sd3.5-large-turbo`).
    #[value(name = "sd3.5-large-turbo", alias = "3.5-large-turbo")]
    Sd35LargeTurbo,
}

impl SdVersion {
    /// The `--model` alias this version stands for (a key of
    /// `model::source::ALIASES`).
    pub fn model_alias(self) -> &'static str {
        match self {
            SdVersion::V1_5 => "sd15",
            SdVersion::V1_5Inpaint => "sd15-inpainting",
            SdVersion::V2Base => "sd2-base",
            SdVersion::V2_1 => "sd21",
            SdVersion::V2_1Base => "sd21-base",
            SdVersion::SdTurbo => "sd-turbo",
            SdVersion::Xl => "sdxl",
            SdVersion::Turbo => "sdxl-turbo",
            SdVersion::Sd3Medium => "sd3-medium",
            SdVersion::Sd35Medium => "sd3.5-medium",
            SdVersion::Sd35Large => "sd3.5-large",
            SdVersion::Sd35LargeTurbo => "sd3.5-large-turbo",
        }
    }
}

/// Parses `--bind-addr`: `HOST:PORT`, with an IPv6 host in brackets
/// (`[::1]:8600`). Returns the host (brackets removed) and the port.
pub fn parse_bind_addr(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not HOST:PORT (e.g. 0.0.0.0:8600, [::1]:8600)"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("bad port `{port}` in `{s}` (0-65535)"))?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .ok_or_else(|| format!("unclosed `[` in `{s}`"))?,
        None if host.contains(':') => {
            return Err(format!(
                "`{s}`: write an IPv6 host in brackets, e.g. [::1]:8600"
            ))
        }
        None => host,
    };
    if host.is_empty() {
        return Err(format!("no host in `{s}` (e.g. 0.0.0.0:{port})"));
    }
    Ok((host.to_string(), port))
}

impl ServeArgs {
    /// Folds the alias flags into the flags they stand for: `--sd-version X`
    /// sets `--model` (clap refuses it beside `--model`/`--model-path`),
    /// `--cuda-device N` sets `--device cuda:N` and `--bind-addr H:P` sets
    /// `--host H --port P`; these two win over `--device`, `--host` and
    /// `--port` (and their variables, which a container image may set).
    ///
    /// # Errors
    /// `--use-flash-attn` on a binary built without the `flash-attn`
    /// feature, or with a device other than `cuda[:N]`/`auto`.
    pub fn apply_aliases(&mut self) -> Result<()> {
        if let Some(v) = self.sd_version {
            self.model = Some(v.model_alias().to_string());
        }
        if let Some(n) = self.cuda_device {
            self.device = format!("cuda:{n}");
        }
        if let Some((host, port)) = self.bind_addr.take() {
            self.host = host;
            self.port = port;
        }
        if self.use_flash_attn {
            if !cfg!(feature = "flash-attn") {
                bail!(
                    "--use-flash-attn: this sd-worker was built without the `flash-attn` feature \
                     (build it with scripts/build-cuda.sh --flash-attn); leave the flag out to \
                     run without flash attention"
                );
            }
            let kind = self.device.split(':').next().unwrap_or_default();
            if kind != "cuda" && kind != "auto" {
                bail!(
                    "--use-flash-attn needs a CUDA device, not `--device {}`",
                    self.device
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn serve_args(flags: &[&str]) -> Result<ServeArgs> {
        let mut argv = vec!["sd-worker"];
        argv.extend_from_slice(flags);
        let mut args = Cli::try_parse_from(argv)?.serve;
        args.apply_aliases()?;
        Ok(args)
    }

    #[test]
    fn every_sd_version_names_a_known_model_alias() {
        for v in SdVersion::value_variants() {
            let alias = v.model_alias();
            let repo = crate::model::source::resolve_alias(alias);
            assert_ne!(repo, alias, "{v:?} -> `{alias}` is not in ALIASES");
        }
    }

    #[test]
    fn sd_version_sets_the_model() {
        let cases = [
            ("v1-5", "sd15"),
            ("v2-1", "sd21"),
            ("xl", "sdxl"),
            ("turbo", "sdxl-turbo"),
            ("sd3-medium", "sd3-medium"),
            ("3.5-large", "sd3.5-large"),
        ];
        for (flag, model) in cases {
            let args = serve_args(&["--sd-version", flag]).unwrap();
            assert_eq!(args.model.as_deref(), Some(model), "{flag}");
        }
        assert!(serve_args(&["--sd-version", "v9"]).is_err());
    }

    #[test]
    fn sd_version_conflicts_with_model_and_model_path() {
        let err = serve_args(&["--sd-version", "xl", "--model", "sd15"]).unwrap_err();
        assert!(err.to_string().contains("--model"), "{err}");
        assert!(serve_args(&["--sd-version", "xl", "--model-path", "/m"]).is_err());
    }

    #[test]
    fn cuda_device_sets_the_device_and_wins_over_device() {
        assert_eq!(
            serve_args(&["--cuda-device", "2"]).unwrap().device,
            "cuda:2"
        );
        let args = serve_args(&["--device", "cpu", "--cuda-device", "1"]).unwrap();
        assert_eq!(args.device, "cuda:1");
        assert!(serve_args(&["--cuda-device", "-1"]).is_err());
        // Without the alias, --device is untouched.
        assert_eq!(serve_args(&["--device", "cpu"]).unwrap().device, "cpu");
    }

    #[test]
    fn bind_addr_sets_host_and_port() {
        let args = serve_args(&["--bind-addr", "0.0.0.0:9000"]).unwrap();
        assert_eq!((args.host.as_str(), args.port), ("0.0.0.0", 9000));
        let args = serve_args(&["--bind-addr", "[::1]:0", "--port", "5"]).unwrap();
        assert_eq!((args.host.as_str(), args.port), ("::1", 0));
        let args = serve_args(&["--bind-addr", "gpu-3.local:8600"]).unwrap();
        assert_eq!(args.host, "gpu-3.local");
        for bad in [
            "8600",
            "host:",
            "host:99999",
            ":8600",
            "::1:8600",
            "[::1:8600",
        ] {
            assert!(parse_bind_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn callback_url_is_the_hive_url() {
        let args = serve_args(&["--callback-url", "http://hive:9000"]).unwrap();
        assert_eq!(args.hive_url.as_deref(), Some("http://hive:9000"));
    }

    #[test]
    fn use_flash_attn_needs_the_feature_and_a_cuda_device() {
        let on_cuda = serve_args(&["--use-flash-attn", "--cuda-device", "0"]);
        let on_cpu = serve_args(&["--use-flash-attn", "--device", "cpu"]);
        if cfg!(feature = "flash-attn") {
            on_cuda.unwrap();
            assert!(on_cpu.unwrap_err().to_string().contains("CUDA"));
        } else {
            let err = on_cuda.unwrap_err().to_string();
            assert!(err.contains("without the `flash-attn` feature"), "{err}");
            assert!(on_cpu.is_err());
        }
    }
}
