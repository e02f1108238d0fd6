//! Seed inputs for the fuzz target: one small case per kind of step and template.

use super::*;

/// Named seed inputs for the fuzz target `pipeline_stateful`: each template as is, and a few
/// multi-step sequences (bursts, time, control-plane changes).
///
/// A template's seed already has the shape of a mutation that changes nothing (it writes
/// back the byte at the quoted-packet anchor, cuts zero bytes, repairs lengths and
/// checksums), so the fuzzer reaches deep states by changing byte values alone.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let h = Harness::new();
    let mut out = Vec::new();
    for (i, t) in h.templates().iter().enumerate() {
        let q = Anchor::of(&t.frame, if t.port == OVERLAY { 8 } else { 0 })[3];
        let writes = t
            .frame
            .get(q)
            .map(|&b| match INTERESTING.iter().position(|&v| v == b) {
                Some(i) => vec![(3 << 14 | 1 << 13, i as u8)],
                None => vec![(3 << 14, b)],
            })
            .unwrap_or_default();
        let step = Step::Template {
            ctl: 0x20,
            vnet: vec![],
            template: i as u8,
            writes,
            extend: 0,
            truncate: 0x8000,
            fix: 7,
        };
        let name = t.name.replace([' ', ','], "_");
        out.push((format!("template-{i:02}-{name}"), encode(&[step])));
    }
    let tmpl = |template: u8, ctl: u8| Step::Template {
        ctl,
        vnet: vec![],
        template,
        writes: vec![],
        extend: 0,
        truncate: 0,
        fix: 0,
    };
    let mixed = vec![
        tmpl(0, 0),
        tmpl(1, 0x10),
        Step::Advance { secs: 31, housekeeping: true },
        tmpl(0, 0x20),
        Step::Control { op: 0, arg: 0x10 },
        tmpl(1, 0x20),
        Step::Control { op: 3, arg: 0 },
        Step::Advance { secs: 0x8000 | 20, housekeeping: true },
        Step::Control { op: 5, arg: 5 },
        tmpl(16, 0x20),
        Step::Control { op: 6, arg: 0 },
    ];
    out.push(("sequence-mixed".into(), encode(&mixed)));
    let gro: Vec<Step> = (0..h.templates().len() as u8)
        .filter(|&i| h.templates()[usize::from(i)].name == "host to pod segment")
        .map(|i| tmpl(i, 0))
        .collect();
    out.push(("sequence-gro-run".into(), encode(&gro)));
    let gso = Step::Template {
        ctl: 0x80 | 0x20,
        vnet: vec![0xa8, 0x05],
        template: h.templates().iter().position(|t| t.name == "to remote pod").unwrap_or(0) as u8,
        writes: vec![],
        extend: 40,
        truncate: 0,
        fix: 1 | 2,
    };
    out.push(("gso-to-remote-pod".into(), encode(&[gso])));
    out
}
