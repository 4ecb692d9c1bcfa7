// The key a per-client limit counts by: IPv4 as it is, IPv6 by its /64, anything else no key at all.
import { describe, expect, it } from "vitest";
import { clientKey } from "../../edge/client-address.ts";

describe("clientKey", () => {
  it("keeps an IPv4 address, also one written in IPv6", () => {
    expect(clientKey("192.0.2.1")).toBe("192.0.2.1");
    expect(clientKey("::ffff:192.0.2.1")).toBe("192.0.2.1");
  });

  it("cuts an IPv6 address to its /64, however it is written", () => {
    expect(clientKey("2001:db8:1:2::7")).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:0DB8:0001:0002:aaaa:bbbb:cccc:dddd")).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(clientKey("::1")).toBe("0:0:0:0::/64");
    expect(clientKey("2001:db8:1:3::7")).not.toBe(clientKey("2001:db8:1:2::7"));
  });

  it("gives no key for what is not an address", () => {
    for (const bad of [
      undefined,
      "",
      "unknown",
      "2001:db8::1::2",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8:9",
      "12345::1",
      "::g",
    ]) {
      expect(clientKey(bad)).toBeUndefined();
    }
  });
});
