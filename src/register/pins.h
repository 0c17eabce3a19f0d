/*-------------------------------------------------------------------------
 *
 * pins.h
 *		  Embassies pinned at a register (table data_embassy.embassy_pins).
 *
 * IDENTIFICATION
 *		  src/register/pins.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_PINS_H
#define DE_PINS_H

#include "seal/keys.h"

/*
 * Raise ERROR (ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION) unless this
 * embassy key is pinned in the current database.  Reads the pins table
 * with the catalog snapshot (the historic one while decoding), so the
 * caller must be in a transaction.  Also raises ERROR when the extension
 * is not installed in this database.
 */
extern void de_pin_require(const DePublicKey *embassy_key);

#endif							/* DE_PINS_H */
