/**
 * Why the codec rejected a packet. A plain number on the per-packet path
 * (0 = accepted); `REJECT_NAMES[code]` gives the stable name a caller uses as
 * its drop-counter label. Never thrown.
 */
export const Reject = {
  OK: 0,
  TRUNCATED: 1, // buffer shorter than the headers claim
  BAD_VERSION: 2, // IP version != 4
  BAD_IHL: 3, // IHL < 5 or header longer than the buffer
  BAD_TOTAL_LENGTH: 4, // total length < header length or > buffer
  BAD_IP_CHECKSUM: 5,
  FRAGMENT: 6, // MF set or fragment offset != 0
  UNSUPPORTED_PROTOCOL: 7, // not TCP or UDP
  BAD_L4_HEADER: 8, // TCP data offset < 5 / beyond packet; UDP length mismatch
  BAD_L4_CHECKSUM: 9,
  BAD_ENCAP: 10, // encapsulation header malformed
  BAD_ENCAP_VERSION: 11,
} as const;
export type Reject = (typeof Reject)[keyof typeof Reject];

export const REJECT_NAMES: readonly string[] = [
  'ok',
  'truncated',
  'bad_version',
  'bad_ihl',
  'bad_total_length',
  'bad_ip_checksum',
  'fragment',
  'unsupported_protocol',
  'bad_l4_header',
  'bad_l4_checksum',
  'bad_encap',
  'bad_encap_version',
];
