/* Placeholder translation unit for a module library that has no sources yet. */
typedef int sc_empty_translation_unit;
