/*-------------------------------------------------------------------------
 *
 * pg_stubs.c
 *		  Link-time stand-ins for the catalog and executor functions that
 *		  the register-side writers of src/codec.c call.  The fuzz target
 *		  and the seed generator never call those writers; if one ever
 *		  did, the stub aborts and names itself.
 *
 * No backend header is included, so the stubs' own signatures cannot
 * clash with the real ones.
 *
 * IDENTIFICATION
 *		  test/fuzz/pg_stubs.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>

#define SHIM_UNREACHABLE(name) \
	void name(void); \
	void \
	name(void) \
	{ \
		fprintf(stderr, "shim: %s is not available outside a server\n", \
				#name); \
		abort(); \
	}

SHIM_UNREACHABLE(CreateTupleDescCopyConstr)
SHIM_UNREACHABLE(FreeTupleDesc)
SHIM_UNREACHABLE(OutputFunctionCall)
SHIM_UNREACHABLE(RelationGetIdentityKeyBitmap)
SHIM_UNREACHABLE(SendFunctionCall)
SHIM_UNREACHABLE(bms_free)
SHIM_UNREACHABLE(bms_is_member)
SHIM_UNREACHABLE(fmgr_info_cxt)
SHIM_UNREACHABLE(format_type_be_qualified)
SHIM_UNREACHABLE(getBaseType)
SHIM_UNREACHABLE(getTypeBinaryOutputInfo)
SHIM_UNREACHABLE(getTypeOutputInfo)
SHIM_UNREACHABLE(get_element_type)
SHIM_UNREACHABLE(get_namespace_name)
SHIM_UNREACHABLE(get_type_io_data)
SHIM_UNREACHABLE(get_typtype)
SHIM_UNREACHABLE(heap_deform_tuple)
SHIM_UNREACHABLE(pg_detoast_datum_packed)
SHIM_UNREACHABLE(type_is_enum)
