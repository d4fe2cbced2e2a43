//! RIM ids, parsing, canonical XML and comparison on built documents; the real NVIDIA RIMs
//! (signature included) are checked in `tests/gpu_evidence.rs`.

use super::*;
use crate::attestation::gpu::{Measurement, NONCE_LEN, SIGNATURE_LEN};

const SWID: &str = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";

/// A RIM document with `resources` (index, active, values), unsigned.
fn rim_xml(version: &str, resources: &[(u32, bool, &[&[u8]])]) -> String {
    let mut out = format!(
        "<SoftwareIdentity xmlns=\"{SWID}\" xmlns:ns0=\"{SWID}\" xmlns:ns2=\"{HASH_NS}\" name=\"GH100\">\n    \
         <ns0:Meta colloquialVersion=\"{version}\"/>\n    <ns0:Payload>\n"
    );
    for (index, active, values) in resources {
        let active = if *active { "True" } else { "False" };
        let hashes: String =
            values.iter().enumerate().map(|(i, v)| format!(" ns2:Hash{i}=\"{}\"", hex::encode(v))).collect();
        out.push_str(&format!(
            "        <ns0:Resource type=\"Measurement\" index=\"{index}\" active=\"{active}\" alternatives=\"{}\"{hashes} size=\"48\"/>\n",
            values.len()
        ));
    }
    out.push_str("    </ns0:Payload>\n</SoftwareIdentity>\n");
    out
}

fn report(measurements: &[(u8, [u8; 48])], opaque: &[(u16, &[u8])]) -> GpuReport {
    GpuReport {
        nonce: [0; NONCE_LEN],
        responder_nonce: [0; NONCE_LEN],
        measurements: measurements
            .iter()
            .map(|(index, value)| Measurement { index: *index, value_type: 1, value: value.to_vec() })
            .collect(),
        opaque: opaque.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
        signed_len: 0,
        signature: [0; SIGNATURE_LEN],
    }
}

#[test]
fn rim_ids_are_nvidias() {
    let r = report(
        &[],
        &[
            (3, b"550.90.07\0"),
            (6, &[0x00, 0x9f, 0x00, 0x96, 0x01, 0, 0, 0]),
            (15, b"882\0\0\0\0\0\0"),
            (17, b"1010\0"),
            (18, b"0200\0"),
        ],
    );
    let ids = rim_ids(&r, GpuArchitecture::Hopper).unwrap();
    assert_eq!(ids.driver, "NV_GPU_DRIVER_GH100_550.90.07");
    assert_eq!(ids.vbios, "NV_GPU_VBIOS_1010_0200_882_96009F0001");
    assert_eq!(
        rim_ids(&r, GpuArchitecture::Blackwell),
        Err(RimError::Unsupported(GpuArchitecture::Blackwell))
    );
    let no_project = report(&[], &[(3, b"550.90.07\0"), (6, &[0; 8]), (15, b"882"), (18, b"0200")]);
    assert_eq!(rim_ids(&no_project, GpuArchitecture::Hopper), Err(RimError::MissingField("project")));
    // Nothing that could walk out of the RIM service's path.
    let sneaky = report(&[], &[(3, b"../x\0"), (6, &[0; 8]), (15, b"882"), (17, b"1010"), (18, b"0200")]);
    assert_eq!(rim_ids(&sneaky, GpuArchitecture::Hopper), Err(RimError::MissingField("driver version")));
}

#[test]
fn a_rim_reads_its_golden_values() {
    let rim = Rim::parse_unsigned(&rim_xml(
        "550.90.07",
        &[(0, true, &[&[1; 48], &[2; 48]]), (1, false, &[&[0; 48]])],
    ))
    .unwrap();
    assert_eq!(rim.version, "550.90.07");
    assert_eq!(rim.measurements.len(), 2);
    assert_eq!(
        rim.measurements[&0],
        Golden { active: true, size: 48, alternatives: vec![vec![1; 48], vec![2; 48]] }
    );
    assert!(!rim.measurements[&1].active);
    for bad in ["<a/>", "not xml", "<SoftwareIdentity xmlns=\"x\"/>", &rim_xml("1", &[])] {
        assert!(matches!(Rim::parse_unsigned(bad), Err(RimError::Malformed(_))), "{bad}");
    }
    let twice = rim_xml("1", &[(3, true, &[&[1; 48]]), (3, true, &[&[1; 48]])]);
    assert!(matches!(Rim::parse_unsigned(&twice), Err(RimError::Malformed(_))));
    let commented =
        rim_xml("1", &[(3, true, &[&[1; 48]])]).replace("<ns0:Payload>", "<ns0:Payload><!-- x -->");
    assert!(matches!(Rim::parse_unsigned(&commented), Err(RimError::Malformed(_))));
}

#[test]
fn measurements_must_match_an_active_alternative() {
    let driver =
        Rim::parse_unsigned(&rim_xml("d", &[(0, true, &[&[1; 48]]), (2, false, &[&[9; 48]])])).unwrap();
    let vbios =
        Rim::parse_unsigned(&rim_xml("v", &[(1, true, &[&[7; 48], &[2; 48]]), (2, false, &[&[9; 48]])]))
            .unwrap();
    let good = report(&[(1, [1; 48]), (2, [2; 48]), (3, [5; 48])], &[]);
    assert_eq!(compare(&good, &driver, &vbios), Ok(()));
    let bad = report(&[(1, [1; 48]), (2, [3; 48])], &[]);
    assert_eq!(compare(&bad, &driver, &vbios), Err(RimError::Mismatch { index: 1, rim: "VBIOS" }));
    let short = report(&[(2, [2; 48])], &[]);
    assert_eq!(compare(&short, &driver, &vbios), Err(RimError::MissingMeasurement(0)));
    let both = Rim::parse_unsigned(&rim_xml("v", &[(0, true, &[&[1; 48]])])).unwrap();
    assert_eq!(compare(&good, &driver, &both), Err(RimError::Conflict(0)));
}

#[test]
fn canonical_xml_sorts_expands_and_escapes() {
    let xml = "<?xml version=\"1.0\"?>\n<r xmlns=\"urn:a\" xmlns:b=\"urn:b\" z=\"1\" b:y=\"&lt;&quot;\" a=\"x y\">\
               <b:c xmlns:b=\"urn:b\" xmlns=\"urn:a\"/><d xmlns=\"\">1 &gt; 0 &amp; <![CDATA[<x>]]></d></r>";
    let root = parse_xml(xml).unwrap();
    let mut out = String::new();
    canonical(&root, &BTreeMap::new(), &|_| false, &mut out);
    assert_eq!(
        out,
        "<r xmlns=\"urn:a\" xmlns:b=\"urn:b\" a=\"x y\" z=\"1\" b:y=\"&lt;&quot;\">\
         <b:c></b:c><d xmlns=\"\">1 &gt; 0 &amp; &lt;x&gt;</d></r>"
    );
    // A subset's apex carries every namespace in scope.
    let Node::Element(c) = &root.children[0] else { panic!("an element") };
    let mut out = String::new();
    canonical(c, &BTreeMap::new(), &|_| false, &mut out);
    assert_eq!(out, "<b:c xmlns=\"urn:a\" xmlns:b=\"urn:b\"></b:c>");
    // Whitespace an XML parser should have normalised is refused instead.
    assert!(matches!(parse_xml("<r a=\"x\ty\"/>"), Err(RimError::Malformed(_))));
}

#[test]
fn an_unsigned_rim_is_refused_when_a_signature_is_required() {
    let xml = rim_xml("1", &[(0, true, &[&[1; 48]])]);
    let root = nvidia_rim_root().unwrap();
    assert_eq!(
        Rim::parse(&xml, &root, 1_800_000_000),
        Err(RimError::Signature("not exactly one enveloped signature"))
    );
}
