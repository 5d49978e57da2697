//! `braid-edge check-config` on a good config and on the mistakes operators make.

mod common;

use common::{Bad, Binary};

const EDGE: Binary = Binary {
    exe: env!("CARGO_BIN_EXE_braid-edge"),
    good: "private_key_file: key.key
gateway:
  address: 203.0.113.10:4754
  public_key: {peer}
uplinks:
  - name: dsl
    interface: eth1
  - name: lte
    interface: wwan0
",
    summary: "Edge to gateway 203.0.113.10:4754",
    bad: &[
        Bad {
            what: "a missing key file",
            from: "key.key",
            to: "missing.key",
            line: 1,
            key: "private_key_file",
            message: "missing.key: No such file or directory",
        },
        Bad {
            what: "an unknown key",
            from: "    interface: wwan0\n",
            to: "    interface: wwan0\n    colour: red\n",
            line: 10,
            key: "uplinks[1].colour",
            message: "unknown key `colour`, expected one of `name`, `interface`",
        },
        Bad {
            what: "a bad address",
            from: "203.0.113.10:4754",
            to: "203.0.113.10:99999",
            line: 3,
            key: "gateway.address",
            message: "expected IP:port",
        },
        Bad {
            what: "a duplicate uplink",
            from: "interface: wwan0",
            to: "interface: eth1",
            line: 9,
            key: "uplinks[1].interface",
            message: "\"eth1\" is also the interface of uplinks[0]",
        },
    ],
};

#[test]
fn a_good_edge_config_is_summarised_and_exits_zero() {
    EDGE.accepts_its_good_config();
}

#[test]
fn bad_edge_configs_exit_one_naming_the_file_line_and_key() {
    EDGE.refuses_each_bad_config_naming_file_line_and_key();
}

#[test]
fn an_uplink_interface_or_a_bridge_this_machine_lacks_is_warned_of() {
    EDGE.warns_of_missing_interfaces(
        "    interface: wwan0\n",
        "    interface: braid-none0\ntap:\n  bridge: br-braid-none\n",
        &[
            "warning: uplink lte: interface braid-none0 does not exist (yet)",
            "warning: TAP braid0: bridge br-braid-none does not exist",
        ],
    );
}

#[test]
fn the_shipped_example_passes_check_config_and_has_every_key_of_the_reference() {
    EDGE.accepts_the_example_as_shipped("edge.yaml", "edge.key");
    EDGE.example_has_every_reference_key("edge.yaml", "edge key");
}
