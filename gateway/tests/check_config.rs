//! `braid-gateway check-config` on a good config and on the mistakes operators make.

#[path = "../../edge/tests/common/mod.rs"]
mod common;

use common::{Bad, Binary};

const GATEWAY: Binary = Binary {
    exe: env!("CARGO_BIN_EXE_braid-gateway"),
    good: "private_key_file: key.key
listen: [\"0.0.0.0:4754\"]
edges:
  - name: van-1
    public_key: {peer}
    tap: braid-van1
",
    summary: "Gateway listening on 0.0.0.0:4754",
    bad: &[
        Bad {
            what: "a missing key file",
            from: "key.key",
            to: "/nonexistent/gateway.key",
            line: 1,
            key: "private_key_file",
            message: "/nonexistent/gateway.key: No such file or directory",
        },
        Bad {
            what: "an unknown key",
            from: "    tap: braid-van1\n",
            to: "    tap: braid-van1\n    address: 192.0.2.1\n",
            line: 7,
            key: "edges[0].address",
            message: "unknown key `address`, expected one of `name`, `public_key`",
        },
        Bad {
            what: "a bad listen address",
            from: "0.0.0.0:4754",
            to: "0.0.0.0:http",
            line: 2,
            key: "listen[0]",
            message: "\"0.0.0.0:http\" is not a socket address; expected IP:port",
        },
        Bad {
            what: "a duplicate edge",
            from: "    tap: braid-van1\n",
            to: "    tap: braid-van1\n  - name: van-1\n    public_key: RznYx4+VZSFljYPltjpxHPm793q+ZuATND43ueCelOQ=\n",
            line: 7,
            key: "edges[1].name",
            message: "\"van-1\" is also the name of edges[0]",
        },
    ],
};

#[test]
fn a_good_gateway_config_is_summarised_and_exits_zero() {
    GATEWAY.accepts_its_good_config();
}

#[test]
fn bad_gateway_configs_exit_one_naming_the_file_line_and_key() {
    GATEWAY.refuses_each_bad_config_naming_file_line_and_key();
}

#[test]
fn a_bridge_this_machine_lacks_is_warned_of() {
    GATEWAY.warns_of_missing_interfaces(
        "    tap: braid-van1\n",
        "    tap: braid-van1\n    bridge: br-braid-none\n",
        &["warning: TAP braid-van1: bridge br-braid-none does not exist"],
    );
}

#[test]
fn the_shipped_example_passes_check_config_and_has_every_key_of_the_reference() {
    GATEWAY.accepts_the_example_as_shipped("gateway.yaml", "gateway.key");
    GATEWAY.example_has_every_reference_key("gateway.yaml", "gateway key");
}
