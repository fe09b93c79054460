// Names for the API's schemas as the dashboard uses them in its JSDoc: every answer it reads is
// one of these, generated into api.d.ts from the server's OpenAPI document.
import type { components } from "./api";

declare global {
  type Schemas = components["schemas"];
  type Run = Schemas["Run"];
  type RunPage = Schemas["RunPage"];
  /** A fleet: the API's answer, with the fields of its free-form document the dashboard reads. */
  type Fleet = Schemas["Fleet"] & FleetDocumentFields;
  /** What the dashboard reads of a fleet document (DESIGN §3), which the API types as any object. */
  type FleetDocumentFields = {
    name: string;
    vessels: any[];
    concurrency?: unknown;
    variables?: Record<string, string>;
    destinations?: any[];
  };
  type FleetPage = Schemas["FleetPage"];
  type RunStats = Schemas["RunStats"];
  type Webhook = Schemas["Webhook"];
  type Accepted = Schemas["Accepted"];
  type DeliveryList = Schemas["DeliveryList"];
}

export {};
