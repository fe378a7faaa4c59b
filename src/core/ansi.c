#include "ansi.h"

enum { TEXT, ESC, CSI, OSC, OSC_ESC, STR, STR_ESC };

size_t kansi_strip(kansi_state *s, const char *in, size_t n, char *out)
{
    size_t o = 0;
    int st = s->st;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        switch (st) {
        case TEXT:
            if (c == 0x1b)
                st = ESC;
            else
                out[o++] = (char)c;
            break;
        case ESC:
            if (c == '[')
                st = CSI;
            else if (c == ']')
                st = OSC;
            else if (c == 'P' || c == 'X' || c == '^' || c == '_')
                st = STR; /* DCS, SOS, PM, APC: run to the string terminator */
            else if (c >= 0x20 && c <= 0x2f)
                ; /* intermediate bytes of an nF sequence: keep skipping */
            else
                st = TEXT;
            break;
        case CSI:
            if (c >= 0x40 && c <= 0x7e)
                st = TEXT;
            break;
        case OSC:
            if (c == 0x07)
                st = TEXT;
            else if (c == 0x1b)
                st = OSC_ESC;
            break;
        case OSC_ESC:
            st = c == '\\' ? TEXT : OSC;
            break;
        case STR:
            if (c == 0x1b)
                st = STR_ESC;
            break;
        case STR_ESC:
            st = c == '\\' ? TEXT : STR;
            break;
        }
    }
    s->st = st;
    return o;
}
