/**
 * The control channel as the agent sees it: publish bytes to a subject, receive bytes from subscriptions. The
 * Master (NATS) is only a relay; everything on it is signed and verified above this layer.
 * @module
 */

/** Whether the channel currently reaches the Master. */
export type ChannelState = "connected" | "reconnecting" | "closed";

/** A connection to the Master. */
export interface ControlChannel extends AsyncDisposable {
  readonly state: ChannelState;
  /** Sends; while reconnecting, the client buffers and sends on reconnect. Never throws for a lost connection. */
  publish(subject: string, data: Uint8Array): void;
  /**
   * Resolves once everything published so far has reached the Master (or the channel is not connected): what a
   * sender awaits to keep its backlog bounded.
   */
  flush(): Promise<void>;
  /**
   * Delivers every message on `subject` to `onMessage` until close or until the returned function is called. In a
   * `queue` group, each message goes to one member of the group only.
   */
  subscribe(subject: string, onMessage: (data: Uint8Array) => void, queue?: string): () => void;
  /**
   * Connects again at once with the newest credentials, keeping every subscription: what a session may hear and
   * say is in its credentials, and a renewed session may have other subjects (a new tag, other subnets).
   */
  reconnect(): Promise<void>;
  close(): Promise<void>;
}
