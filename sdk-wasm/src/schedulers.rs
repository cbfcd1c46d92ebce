//! The scheduler vocabulary, defined once: each scheduler's wire name (the
//! request's `scheduler` field, `GET /v1/info`'s `schedulers`), its label for
//! people, the names AUTOMATIC1111 gives it, and which models take it.
//!
//! The worker names its schedulers from this table (and writes [`SchedulerSpec::a1111`]
//! into its PNGs' `parameters`), and resolves a request's `scheduler` with
//! [`SchedulerName::candidates`]. TypeScript gets [`SchedulerName`] as a literal union
//! (tsify) and the table itself as `packages/sdk/src/scheduler-table.ts`, which
//! [`typescript_module`] writes; a test here fails while that file is stale.
//!
//! A request may name a scheduler by any of its spellings, case-insensitively:
//! the wire name, the label, the A1111 sampler name, or an alias. One spelling
//! may name a scheduler of each family: A1111 and Forge call the sampler they
//! run on Stable Diffusion 3 (Euler on the flow's sigmas) plain "Euler", so
//! "Euler" is `euler` on a diffusion model and `flow_euler` on a flow-matching one.

use serde::{Deserialize, Serialize};

/// One row of [`SCHEDULERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct SchedulerSpec {
    /// The wire name.
    pub name: SchedulerName,
    /// What a person sees ("Euler ancestral").
    pub label: &'static str,
    /// The sampler name A1111 writes into its infotext (`Sampler: Euler a`) in the
    /// form every A1111 version reads: Karras schedules folded into the name
    /// ("DPM++ 2M Karras"), as A1111 before 1.9 wrote them. The worker writes this.
    pub a1111: &'static str,
    /// A1111 1.9 and later split the Karras schedule off: `sampler_name`
    /// ("DPM++ 2M") ...
    pub a1111_sampler: &'static str,
    /// ... and `scheduler` / `Schedule type` ("Karras"); absent where A1111's
    /// "Automatic" applies. `a1111` is `a1111_sampler` followed by this.
    #[cfg_attr(target_arch = "wasm32", tsify(optional))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a1111_schedule: Option<&'static str>,
    /// Other accepted spellings (earlier wire names, A1111's API aliases).
    pub aliases: &'static [&'static str],
    /// True for schedulers of flow-matching models (SD 3), false for diffusion
    /// models (SD 1.x, 2.x, XL). Each model takes only its family's schedulers.
    pub flow_matching: bool,
}

/// Declares [`SchedulerName`] and [`SCHEDULERS`] from one list, so a wire name
/// is written once.
macro_rules! schedulers {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $wire:literal {
            label: $label:literal,
            a1111: $a1111:literal,
            a1111_sampler: $sampler:literal,
            a1111_schedule: $schedule:expr,
            aliases: [$($alias:literal),* $(,)?],
            flow_matching: $flow:literal $(,)?
        }
    ),+ $(,)?) => {
        /// A scheduler's wire name: what a request's `scheduler` field holds
        /// (`"euler_a"`). See [`SCHEDULERS`] for the other spellings it accepts.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
        pub enum SchedulerName {
            $($(#[doc = $doc])* #[serde(rename = $wire)] $variant,)+
        }

        /// Every scheduler of the contract, in [`SchedulerName`]'s order.
        pub static SCHEDULERS: [SchedulerSpec; SchedulerName::COUNT] = [$(SchedulerSpec {
            name: SchedulerName::$variant,
            label: $label,
            a1111: $a1111,
            a1111_sampler: $sampler,
            a1111_schedule: $schedule,
            aliases: &[$($alias),*],
            flow_matching: $flow,
        }),+];

        impl SchedulerName {
            /// How many schedulers the contract names.
            pub const COUNT: usize = [$(SchedulerName::$variant),+].len();
            /// Every scheduler, in declaration order (the order of `/v1/info`).
            pub const ALL: [SchedulerName; SchedulerName::COUNT] = [$(SchedulerName::$variant),+];

            /// The wire name (`"euler_a"`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(SchedulerName::$variant => $wire,)+
                }
            }
        }
    };
}

schedulers! {
    /// DDIM (Song et al.), deterministic (eta 0).
    Ddim = "ddim" {
        label: "DDIM", a1111: "DDIM", a1111_sampler: "DDIM", a1111_schedule: None,
        aliases: [], flow_matching: false,
    },
    /// DDPM (Ho et al.), ancestral, stochastic.
    Ddpm = "ddpm" {
        label: "DDPM", a1111: "DDPM", a1111_sampler: "DDPM", a1111_schedule: None,
        aliases: [], flow_matching: false,
    },
    /// Euler (Karras et al.'s Algorithm 2 without churn), diffusers' EulerDiscreteScheduler.
    Euler = "euler" {
        label: "Euler", a1111: "Euler", a1111_sampler: "Euler", a1111_schedule: None,
        aliases: ["k_euler"], flow_matching: false,
    },
    /// Euler ancestral, stochastic.
    EulerAncestral = "euler_a" {
        label: "Euler ancestral", a1111: "Euler a", a1111_sampler: "Euler a", a1111_schedule: None,
        aliases: ["euler_ancestral", "k_euler_a"], flow_matching: false,
    },
    /// DPM-Solver++ (2M), multistep, second order.
    DpmPp2m = "dpmpp_2m" {
        label: "DPM++ 2M", a1111: "DPM++ 2M", a1111_sampler: "DPM++ 2M", a1111_schedule: None,
        aliases: ["dpm++_2m", "k_dpmpp_2m"], flow_matching: false,
    },
    /// DPM++ 2M on Karras et al.'s sigmas (rho 7).
    DpmPp2mKarras = "dpmpp_2m_karras" {
        label: "DPM++ 2M Karras", a1111: "DPM++ 2M Karras", a1111_sampler: "DPM++ 2M",
        a1111_schedule: Some("Karras"),
        aliases: ["dpm++_2m_karras", "k_dpmpp_2m_ka"], flow_matching: false,
    },
    /// UniPC (bh2), second order, predictor-corrector.
    UniPc = "unipc" {
        label: "UniPC", a1111: "UniPC", a1111_sampler: "UniPC", a1111_schedule: None,
        aliases: ["uni_pc"], flow_matching: false,
    },
    /// Latent consistency models (LCM, LCM-LoRA), 1-8 steps.
    Lcm = "lcm" {
        label: "LCM", a1111: "LCM", a1111_sampler: "LCM", a1111_schedule: None,
        aliases: [], flow_matching: false,
    },
    /// Euler on a flow-matching model's velocity (SD 3). A1111 and Forge run SD 3
    /// with their "Euler" sampler on the flow's sigmas and write `Sampler: Euler`.
    FlowEuler = "flow_euler" {
        label: "Flow Euler", a1111: "Euler", a1111_sampler: "Euler", a1111_schedule: None,
        aliases: [], flow_matching: true,
    },
}

impl SchedulerName {
    /// This scheduler's row of [`SCHEDULERS`].
    pub fn spec(self) -> &'static SchedulerSpec {
        // The macro builds both in declaration order (checked by a test).
        &SCHEDULERS[self as usize]
    }

    /// What a person sees ("Euler ancestral").
    pub fn label(self) -> &'static str {
        self.spec().label
    }

    /// The sampler name written into a PNG's A1111 `parameters` (`Sampler: Euler a`).
    pub fn a1111_name(self) -> &'static str {
        self.spec().a1111
    }

    /// Whether this scheduler is for flow-matching models (else for diffusion models).
    pub fn is_flow_matching(self) -> bool {
        self.spec().flow_matching
    }

    /// The schedulers `spelling` may name, compared case-insensitively with each
    /// one's wire name, label, A1111 name and aliases, in [`Self::ALL`]'s order.
    /// Empty for an unknown spelling; two for "Euler" (`euler`, `flow_euler`):
    /// the caller takes the one its model takes.
    pub fn candidates(spelling: &str) -> impl Iterator<Item = SchedulerName> {
        let wanted = spelling.to_lowercase();
        SCHEDULERS
            .iter()
            .filter(move |s| s.spellings().any(|name| name.to_lowercase() == wanted))
            .map(|s| s.name)
    }

    /// The first of [`Self::candidates`]: for "Euler", the diffusion model's `euler`.
    pub fn from_name(spelling: &str) -> Option<SchedulerName> {
        Self::candidates(spelling).next()
    }

    /// The scheduler `spelling` names for a model of the given family, if any.
    pub fn for_family(spelling: &str, flow_matching: bool) -> Option<SchedulerName> {
        Self::candidates(spelling).find(|s| s.is_flow_matching() == flow_matching)
    }
}

impl SchedulerSpec {
    /// Every accepted spelling: wire name, label, A1111 name, aliases (some may repeat).
    pub fn spellings(&self) -> impl Iterator<Item = &'static str> {
        [self.name.name(), self.label, self.a1111]
            .into_iter()
            .chain(self.aliases.iter().copied())
    }
}

/// Where [`typescript_module`]'s output is committed, from the repository root.
pub const TYPESCRIPT_MODULE_PATH: &str = "packages/sdk/src/scheduler-table.ts";

/// The TypeScript module of the table (`packages/sdk/src/scheduler-table.ts`):
/// `SCHEDULERS` (the rows, as JSON) and `SCHEDULER_SPELLINGS` (each lower-cased
/// spelling to the schedulers it may name, as [`SchedulerName::candidates`] finds them).
pub fn typescript_module() -> String {
    let rows = serde_json::to_string_pretty(&SCHEDULERS).expect("the table serialises");
    let mut spellings: Vec<String> = SCHEDULERS
        .iter()
        .flat_map(|s| s.spellings().map(str::to_lowercase))
        .collect();
    spellings.sort();
    spellings.dedup();
    let pairs: Vec<(String, Vec<SchedulerName>)> = spellings
        .into_iter()
        .map(|s| {
            let names = SchedulerName::candidates(&s).collect();
            (s, names)
        })
        .collect();
    let pairs = serde_json::to_string(&pairs).expect("the spellings serialise");
    let pairs = pairs.replace("]],[", "]],\n  [");
    format!(
        "// Generated from sdk-wasm/src/schedulers.rs (`typescript_module`): do not edit.\n\
         // `SD_WORKER_SDK_WRITE_TS=1 cargo test -p sd-worker-sdk schedulers` rewrites it;\n\
         // that test fails while this file is stale.\n\
         \n\
         import type {{ SchedulerName, SchedulerSpec }} from '../wasm/sd_worker_sdk.js';\n\
         \n\
         /** Every scheduler of the contract, in the worker's order. */\n\
         export const SCHEDULERS: readonly SchedulerSpec[] = {rows};\n\
         \n\
         /**\n \
          * Each accepted spelling, lower-cased (wire name, label, A1111 name, alias), to the\n \
          * schedulers it may name: two for \"euler\" (`euler`, `flow_euler`), told apart by the\n \
          * model's family.\n \
          */\n\
         export const SCHEDULER_SPELLINGS: ReadonlyMap<string, readonly SchedulerName[]> = new Map<\n  string,\n  readonly SchedulerName[]\n>([\n  \
         {inner}\n]);\n",
        inner = &pairs[1..pairs.len() - 1],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_follow_the_enum_and_wire_names_are_unique() {
        assert_eq!(SCHEDULERS.len(), SchedulerName::ALL.len());
        for (i, (row, name)) in SCHEDULERS.iter().zip(SchedulerName::ALL).enumerate() {
            assert_eq!(row.name, name, "row {i}");
            assert_eq!(name as usize, i);
            assert_eq!(name.spec(), row);
            // The serde name is the wire name.
            assert_eq!(
                serde_json::to_value(name).unwrap(),
                serde_json::json!(name.name())
            );
            assert_eq!(
                serde_json::from_value::<SchedulerName>(serde_json::json!(name.name())).unwrap(),
                name
            );
        }
        let mut wire: Vec<_> = SchedulerName::ALL.map(SchedulerName::name).to_vec();
        wire.sort();
        wire.dedup();
        assert_eq!(wire.len(), SchedulerName::COUNT);
    }

    #[test]
    fn every_spelling_names_its_scheduler_in_any_case() {
        for row in &SCHEDULERS {
            for spelling in row.spellings() {
                assert!(spelling.is_ascii(), "{spelling}");
                for s in [
                    spelling.to_string(),
                    spelling.to_uppercase(),
                    spelling.to_lowercase(),
                ] {
                    assert!(
                        SchedulerName::candidates(&s).any(|n| n == row.name),
                        "{s:?} -> {:?}",
                        row.name
                    );
                    assert_eq!(
                        SchedulerName::for_family(&s, row.flow_matching),
                        Some(row.name),
                        "{s:?} on a model of {:?}'s family",
                        row.name
                    );
                }
            }
        }
        assert_eq!(SchedulerName::from_name("pndm"), None);
        assert_eq!(SchedulerName::from_name(""), None);
        assert_eq!(SchedulerName::from_name("euler a "), None, "no trimming");
    }

    #[test]
    fn a_spelling_names_at_most_one_scheduler_per_family() {
        for row in &SCHEDULERS {
            for spelling in row.spellings() {
                let names: Vec<_> = SchedulerName::candidates(spelling).collect();
                let flow = names.iter().filter(|n| n.is_flow_matching()).count();
                assert!(
                    flow <= 1 && names.len() - flow <= 1,
                    "{spelling}: {names:?}"
                );
            }
        }
    }

    #[test]
    fn a1111_names_match_what_a1111_and_forge_write() {
        let a1111 = |n: SchedulerName| n.a1111_name();
        assert_eq!(a1111(SchedulerName::EulerAncestral), "Euler a");
        assert_eq!(a1111(SchedulerName::DpmPp2mKarras), "DPM++ 2M Karras");
        // SD 3 in A1111 1.10 and Forge: `Sampler: Euler`.
        assert_eq!(a1111(SchedulerName::FlowEuler), "Euler");
        assert_eq!(
            SchedulerName::for_family("Euler", true),
            Some(SchedulerName::FlowEuler)
        );
        assert_eq!(
            SchedulerName::for_family("Euler", false),
            Some(SchedulerName::Euler)
        );
        assert_eq!(SchedulerName::for_family("Euler a", true), None);
        // The pre-1.9 name is the 1.9 sampler followed by its schedule.
        for row in &SCHEDULERS {
            let joined = match row.a1111_schedule {
                Some(schedule) => format!("{} {schedule}", row.a1111_sampler),
                None => row.a1111_sampler.to_string(),
            };
            assert_eq!(row.a1111, joined);
        }
    }

    /// The committed TypeScript table must be what the Rust table generates.
    /// `SD_WORKER_SDK_WRITE_TS=1` rewrites it instead of failing.
    #[test]
    fn schedulers_typescript_module_is_current() {
        crate::ts_modules::assert_current(
            TYPESCRIPT_MODULE_PATH,
            &typescript_module(),
            "schedulers",
        );
    }
}
