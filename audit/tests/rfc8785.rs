//! The canonical JSON that entry hashes are computed over, held to RFC 8785's
//! own examples (§3.2.2 the sample object, §3.2.3 key sorting, Appendix B
//! numbers), both through the canonicalizer and through an entry's bytes.

use serde_json::{Value, json};
use switchboard_audit::entry::{UnhashedEntry, canonical_bytes};

fn canonical(value: &Value) -> String {
    String::from_utf8(serde_json_canonicalizer::to_vec(value).unwrap()).unwrap()
}

/// The bytes of an entry whose `data` is `data`, and where `data` sits in them.
fn data_inside_an_entry(data: &Value) -> String {
    let entry = UnhashedEntry {
        n: 1,
        at: "2026-11-24T10:00:00.000Z",
        actor: "a",
        action: "b",
        contact: None,
        conversation_id: None,
        data,
        prev: "0000000000000000000000000000000000000000000000000000000000000000",
    };
    let text = String::from_utf8(canonical_bytes(&entry).unwrap()).unwrap();
    let start = text.find(",\"data\":").unwrap() + ",\"data\":".len();
    let end = text.rfind(",\"n\":1,").unwrap();
    text[start..end].to_owned()
}

fn check(input: &str, expected: &str) {
    let value: Value = serde_json::from_str(input).unwrap();
    assert_eq!(canonical(&value), expected, "canonicalizer, input {input}");
    assert_eq!(data_inside_an_entry(&value), expected, "inside an entry, input {input}");
}

#[test]
fn section_3_2_2_sample() {
    check(
        r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#,
        r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#,
    );
}

#[test]
fn section_3_2_3_sorting_by_utf16_code_units() {
    check(
        r#"{
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\ud83d\ude00": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#,
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
         \"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\
         \"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}",
    );
}

#[test]
fn appendix_b_numbers() {
    let cases: [(u64, &str); 24] = [
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for (bits, expected) in cases {
        let value = json!(f64::from_bits(bits));
        assert_eq!(canonical(&value), expected, "{bits:#018x}");
        assert_eq!(data_inside_an_entry(&value), expected, "{bits:#018x} inside an entry");
    }
}

#[test]
fn integers_are_written_as_their_double() {
    // RFC 8785 has one number type, the IEEE 754 double: an integer above
    // 2^53 is hashed in the double's spelling (so a verifier in any language
    // gets the same bytes), which is why an entry's `n` stays below it.
    check("9007199254740993", "9007199254740992");
    check("-0", "0");
    check("[1.0, 10, 1e2]", "[1,10,100]");
}
