/**
 * The quota wing: admission for the user and key scopes (windows, all-or-nothing counters,
 * concurrency leases and their fair wait, the refusals). This entry is what the rest of the guard
 * uses (guard.ts builds a QuotaAdmission, call.ts reserves and settles through it); the other files
 * of the folder are the wing's own.
 */
export { QuotaAdmission } from './admission.js'
export type { QuotaReservation } from './reservation.js'
