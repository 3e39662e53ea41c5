/**
 * Webhook signatures per the Standard Webhooks specification, as the gateway's sender signs
 * them: HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{raw body}` with the endpoint's
 * secret (`whsec_` + base64 of the key), sent as `webhook-signature: v1,<base64>` (several,
 * space-separated, during a secret rotation). Verification compares in constant time
 * (`timingSafeEqual`) and refuses a timestamp more than `toleranceSeconds` (5 min) away.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

import { WebhookVerificationError } from "./errors.js";

const SECRET_PREFIX = "whsec_";
export const DEFAULT_TOLERANCE_SECONDS = 300;

/** A delivery's body, parsed: `{id, type, timestamp, data}`. */
export interface WebhookEvent {
  id: string;
  type: string;
  timestamp: string;
  data: Record<string, unknown>;
}

export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

export interface VerifyOptions {
  /** Largest accepted distance between the signature's time and now (default 300 s). */
  toleranceSeconds?: number;
  /** "Now" in milliseconds since the epoch (tests). */
  now?: number;
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get(name) ?? undefined;
  const record = headers as Record<string, string | string[] | undefined>;
  const key = Object.keys(record).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : record[key];
  return Array.isArray(value) ? value.join(" ") : value;
}

function bodyBytes(payload: string | Uint8Array): Buffer {
  return typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload);
}

export class Webhook {
  private readonly key: Buffer;

  /** `secret`: the endpoint's `whsec_...` secret, as create or rotate answered it. */
  constructor(secret: string) {
    const encoded = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
    this.key = Buffer.from(encoded, "base64");
    if (this.key.length === 0) throw new WebhookVerificationError("the webhook secret is empty or not base64");
  }

  /** The `v1,<base64>` signature of a delivery. */
  sign(id: string, timestampSeconds: number, payload: string | Uint8Array): string {
    const mac = createHmac("sha256", this.key);
    mac.update(`${id}.${timestampSeconds}.`);
    mac.update(bodyBytes(payload));
    return `v1,${mac.digest("base64")}`;
  }

  /**
   * Verifies a delivery: `payload` is the raw body exactly as received (before any JSON
   * parsing), `headers` the request's. Answers the parsed event; throws
   * `WebhookVerificationError` when a header is missing, the timestamp is out of tolerance, or
   * no signature matches.
   */
  verify(payload: string | Uint8Array, headers: WebhookHeaders, options: VerifyOptions = {}): WebhookEvent {
    const id = header(headers, "webhook-id");
    const timestamp = header(headers, "webhook-timestamp");
    const signatures = header(headers, "webhook-signature");
    if (!id || !timestamp || !signatures) {
      throw new WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header");
    }
    if (!/^[0-9]+$/.test(timestamp)) throw new WebhookVerificationError("invalid webhook-timestamp");
    const seconds = Number(timestamp);
    const now = Math.floor((options.now ?? Date.now()) / 1000);
    const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
    if (now - seconds > tolerance) throw new WebhookVerificationError("the webhook's timestamp is too old");
    if (seconds - now > tolerance) throw new WebhookVerificationError("the webhook's timestamp is in the future");
    const expected = Buffer.from(this.sign(id, seconds, payload).slice(3), "base64");
    const matched = signatures.split(" ").some((entry) => {
      const [version, value] = entry.split(",", 2);
      if (version !== "v1" || value === undefined) return false;
      const given = Buffer.from(value, "base64");
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
    if (!matched) throw new WebhookVerificationError("no webhook signature matches");
    try {
      return JSON.parse(bodyBytes(payload).toString("utf8")) as WebhookEvent;
    } catch (error) {
      throw new WebhookVerificationError("the webhook's body is not JSON", { cause: error });
    }
  }
}

/** `new Webhook(secret).verify(payload, headers, options)`. */
export function verifyWebhook(
  payload: string | Uint8Array,
  headers: WebhookHeaders,
  secret: string,
  options: VerifyOptions = {},
): WebhookEvent {
  return new Webhook(secret).verify(payload, headers, options);
}
